#pragma once
// Checks on one normalized row that need nothing outside it: roles and their order, content
// types, media tag counts, image paths written into the text, empty responses, end markers.
#include <string>
#include <vector>

#include "data/row_format.h"

namespace vlmforge::data {

// An image path found inside a message's text (the most common swift dataset mistake).
struct PathInText {
  size_t message = 0;  // index into NormalizedRow::messages
  size_t offset = 0;   // byte range of the path in the content string
  size_t length = 0;
  std::string path;
};

struct RowFacts {
  std::vector<PathInText> paths_in_text;
  size_t image_tags = 0;
  size_t assistant_turns = 0;
  size_t marked_turns = 0;  // assistant turns that end with </s>, <|im_end|> or <|endoftext|>
};

RowFacts check_row(const NormalizedRow& row, std::vector<RowProblem>& problems);

// Whitespace-delimited words of `text` that look like image files (by extension) or image URLs.
std::vector<PathInText> find_image_paths(const std::string& text);

}  // namespace vlmforge::data
