#include "data/row_checks.h"

#include <array>
#include <string_view>

namespace vlmforge::data {

namespace {

size_t count_occurrences(std::string_view text, std::string_view tag) {
  size_t count = 0;
  for (size_t at = text.find(tag); at != std::string_view::npos; at = text.find(tag, at + tag.size())) ++count;
  return count;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool ends_with_marker(std::string_view text) {
  text = trim_right(text);
  return text.ends_with("</s>") || text.ends_with("<|im_end|>") || text.ends_with("<|endoftext|>");
}

bool tool_role(std::string_view role) { return role == "tool" || role == "tool_response"; }

// Which role may follow `prev` (swift's turn structure, tool calls included).
bool may_follow(std::string_view prev, std::string_view next) {
  if (prev == "user") return next == "assistant" || next == "tool_call";
  if (prev == "assistant") return next == "user" || next == "tool_call" || tool_role(next);
  if (prev == "tool_call") return next == "tool_call" || tool_role(next);
  if (tool_role(prev)) return next == "assistant" || tool_role(next);
  return false;
}

void check_order(const std::vector<Message>& messages, std::vector<RowProblem>& problems) {
  std::string_view prev;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string_view role = messages[i].role;
    if (role == "system") {
      if (i > 0) {
        problems.push_back({FindingCode::kBadOrder, "message " + std::to_string(i) + " is a system message; only the first may be"});
        return;
      }
      continue;
    }
    if (prev.empty()) {
      if (role != "user") {
        problems.push_back({FindingCode::kBadOrder, "the first turn is " + std::string(role) + ", expected user"});
        return;
      }
    } else if (!may_follow(prev, role)) {
      problems.push_back({FindingCode::kBadOrder, "message " + std::to_string(i) + " (" + std::string(role) +
                                                      ") follows " + std::string(prev)});
      return;
    }
    prev = role;
  }
  if (prev.empty()) {
    problems.push_back({FindingCode::kBadOrder, "only a system message, no user turn"});
  } else if (prev != "assistant") {
    problems.push_back({FindingCode::kNoResponse, "the last turn is " + std::string(prev) + ", not assistant"});
  }
}

constexpr std::array<std::string_view, 6> kImageExtensions{".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"};

bool looks_like_image_path(std::string_view word) {
  if (word.find('<') != std::string_view::npos || word.size() < 5) return false;
  std::string lower(word.substr(word.size() - std::min<size_t>(word.size(), 5)));
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  for (std::string_view ext : kImageExtensions)
    if (std::string_view(lower).ends_with(ext) && word.size() > ext.size()) return true;
  return false;
}

// Fast rejection for the common case: no '.' followed by an image extension anywhere.
bool mentions_image_extension(std::string_view text) {
  for (size_t at = text.find('.'); at != std::string_view::npos; at = text.find('.', at + 1)) {
    std::string ext;
    for (size_t i = at; i < text.size() && i < at + 5; ++i) ext += static_cast<char>(text[i] | 0x20);
    for (std::string_view e : kImageExtensions)
      if (std::string_view(ext).starts_with(e)) return true;
  }
  return false;
}

}  // namespace

std::vector<PathInText> find_image_paths(const std::string& text) {
  std::vector<PathInText> found;
  if (!mentions_image_extension(text)) return found;
  constexpr std::string_view kTrim = "\"'`()[]{},;:!?";
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    size_t end = i;
    while (end < text.size() && !is_space(text[end])) ++end;
    size_t b = i, e = end;
    while (b < e && kTrim.find(text[b]) != std::string_view::npos) ++b;
    while (e > b && (kTrim.find(text[e - 1]) != std::string_view::npos || text[e - 1] == '.')) --e;
    const std::string_view word(text.data() + b, e - b);
    if (looks_like_image_path(word)) found.push_back({0, b, e - b, std::string(word)});
    i = end;
  }
  return found;
}

RowFacts check_row(const NormalizedRow& row, std::vector<RowProblem>& problems) {
  RowFacts facts;
  const auto& messages = row.messages;
  // Without a usable message list there is nothing further to check in the text.
  for (const RowProblem& p : problems)
    if (p.code == FindingCode::kMissingMessages) return facts;
  if (messages.empty()) {
    problems.push_back({FindingCode::kEmptyMessages, "the row has no messages"});
    return facts;
  }
  size_t tags[3] = {0, 0, 0};
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    const std::string_view role = m.role;
    if (!m.text) {
      problems.push_back({FindingCode::kNonStringContent,
                          "message " + std::to_string(i) + " (" + std::string(role) + ") content is " + std::string(m.content_type)});
      continue;
    }
    const std::string& text = *m.text;
    tags[0] += count_occurrences(text, "<image>");
    tags[1] += count_occurrences(text, "<video>");
    tags[2] += count_occurrences(text, "<audio>");
    if (role == "assistant") {
      ++facts.assistant_turns;
      if (trim_right(text).empty()) problems.push_back({FindingCode::kEmptyResponse, "message " + std::to_string(i) + " (assistant) is empty"});
      if (ends_with_marker(text)) ++facts.marked_turns;
    }
    for (PathInText& p : find_image_paths(text)) {
      p.message = i;
      problems.push_back({FindingCode::kPathInContent, "message " + std::to_string(i) + " contains the image path \"" + p.path + "\""});
      facts.paths_in_text.push_back(std::move(p));
    }
  }
  facts.image_tags = tags[0];
  check_order(messages, problems);

  size_t listed[3] = {0, 0, 0};
  for (const MediaRef& m : row.media) ++listed[static_cast<int>(m.kind)];
  constexpr FindingCode kCodes[3] = {FindingCode::kImageCountMismatch, FindingCode::kVideoCountMismatch,
                                     FindingCode::kAudioCountMismatch};
  constexpr const char* kNames[3] = {"image", "video", "audio"};
  for (int k = 0; k < 3; ++k) {
    // swift inserts the tags itself when a row has none, so only a nonzero count must match.
    if (tags[k] > 0 && tags[k] != listed[k])
      problems.push_back({kCodes[k], std::to_string(tags[k]) + " <" + kNames[k] + "> tag(s) but " + std::to_string(listed[k]) +
                                         " " + kNames[k] + "(s) listed"});
  }
  if (row.singular_image_key) problems.push_back({FindingCode::kSingularImageKey, "the row uses \"image\" instead of \"images\""});
  return facts;
}

}  // namespace vlmforge::data
