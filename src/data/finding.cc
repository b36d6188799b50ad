#include "data/finding.h"

#include <array>

namespace vlmforge::data {

namespace {

using enum Severity;

// Indexed by FindingCode; the names are part of the CLI's interface and must not change.
constexpr std::array<FindingInfo, kFindingCodeCount> kInfos{{
    {"invalid-json", kError, "fix the JSON syntax of the row (one JSON object per line)"},
    {"line-too-long", kError, "split the row or raise --max_line_bytes; rows this large are usually a mistake"},
    {"nesting-too-deep", kError, "a chat row needs only a few levels of nesting; regenerate the row"},
    {"not-an-object", kError, "each row must be a JSON object such as {\"messages\": [...]}"},
    {"missing-messages", kError, "give the row \"messages\" (or conversations / query+response / instruction+output)"},
    {"empty-messages", kError, "add at least a user and an assistant message"},
    {"unknown-role", kError, "use system, user, assistant, tool, tool_call or tool_response"},
    {"bad-order", kError, "system only first, then user and assistant alternating"},
    {"no-response", kWarning, "a training row must end with an assistant message (fine for inference data)"},
    {"non-string-content", kError, "make \"content\" a string; put images in the top-level \"images\" list"},
    {"empty-response", kError, "give the assistant turn its text or drop the row"},
    {"image-count-mismatch", kError, "write one <image> tag per entry of \"images\", or none to let swift add them"},
    {"video-count-mismatch", kError, "write one <video> tag per entry of \"videos\", or none"},
    {"audio-count-mismatch", kError, "write one <audio> tag per entry of \"audios\", or none"},
    {"bad-media-entry", kError, "list paths or URLs as strings (or {\"path\": ...} objects)"},
    {"singular-image-key", kWarning, "rename \"image\" to \"images\" (a list); --fix does it"},
    {"path-in-content", kError, "move the path into \"images\" and write <image> in its place; --fix does it"},
    {"duplicate-row", kWarning, "drop the repeated row unless the repetition is intended"},
    {"inconsistent-end-marker", kWarning, "remove end markers such as </s> or <|im_end|> from the text: the template adds them"},
    {"remote-media", kWarning, "a URL is fetched at training time; download it if the trainer has no network"},
    {"image-missing", kError, "fix the path (relative paths resolve against --base_dir or the dataset directory)"},
    {"media-missing", kError, "fix the video / audio path (relative paths resolve against --base_dir or the dataset directory)"},
    {"image-unreadable", kError, "check the file permissions"},
    {"not-an-image", kError, "point to a JPEG, PNG, WebP, GIF or BMP file"},
    {"image-corrupt", kError, "re-export the image; its header is damaged or cut short"},
    {"image-wrong-extension", kWarning, "rename the file so its extension matches its format"},
    {"image-exif-rotated", kWarning, "swift trains on the stored pixels, not the upright photo: rotate the pixels and drop the EXIF orientation if the model should see it upright"},
    {"image-aspect-ratio", kError, "crop or pad the image: Qwen2-VL refuses an aspect ratio above 200"},
    {"too-long", kError, "shorten the row, lower --max_pixels, or raise --max_length"},
}};

}  // namespace

const FindingInfo& finding_info(FindingCode code) { return kInfos[static_cast<size_t>(code)]; }

std::string_view severity_name(Severity severity) { return severity == Severity::kError ? "error" : "warning"; }

}  // namespace vlmforge::data
