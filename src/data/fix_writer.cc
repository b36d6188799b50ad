#include "data/fix_writer.h"

namespace vlmforge::data {

using nlohmann::ordered_json;

bool fix_row(ordered_json& row, const NormalizedRow& normalized, const RowFacts& facts) {
  bool changed = false;
  if (normalized.singular_image_key && !row.contains("images")) {
    ordered_json image = row["image"];
    row.erase("image");
    row["images"] = image.is_array() ? image : ordered_json::array({image});
    changed = true;
  }
  // Moving paths is unambiguous only when the row has no images of its own, no <image> tags, and
  // every message survived normalization (so indexes match the original list).
  const bool sharegpt = normalized.format == RowFormat::kSharegpt;
  const char* list_key = sharegpt ? "conversations" : "messages";
  const char* content_key = sharegpt ? "value" : "content";
  bool has_images = false;
  for (const MediaRef& m : normalized.media) has_images = has_images || m.kind == MediaKind::kImage;
  if (facts.paths_in_text.empty() || has_images || facts.image_tags > 0) return changed;
  if (normalized.format != RowFormat::kMessages && !sharegpt) return changed;
  ordered_json& list = row[list_key];
  if (!list.is_array() || list.size() != normalized.messages.size()) return changed;
  ordered_json images = ordered_json::array();
  for (const PathInText& p : facts.paths_in_text) images.push_back(p.path);
  // Replace from the back so earlier offsets stay valid.
  for (auto it = facts.paths_in_text.rbegin(); it != facts.paths_in_text.rend(); ++it) {
    std::string& text = list[it->message][content_key].get_ref<std::string&>();
    text.replace(it->offset, it->length, "<image>");
  }
  row["images"] = images;
  return true;
}

}  // namespace vlmforge::data
