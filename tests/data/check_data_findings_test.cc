// One fixture per finding code: good rows around bad ones, with the exact codes and lines expected.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/check_data_fixture.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"

namespace vlmforge::test {
namespace {

namespace fs = std::filesystem;

const std::string kGood = R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})";

std::string row(const std::string& user, const std::string& assistant, const std::string& extra = "") {
  return R"({"messages":[{"role":"user","content":)" + nlohmann::json(user).dump() + R"(},{"role":"assistant","content":)" +
         nlohmann::json(assistant).dump() + "}]" + extra + "}";
}

void expect_findings(const CheckOutput& out, const std::vector<CodeLine>& expected, int exit_code) {
  EXPECT_EQ(out.findings, expected) << out.result.out << out.result.err;
  EXPECT_EQ(out.result.exit_code, exit_code) << out.result.err;
}

TEST(CheckDataFindings, CleanDataExitsZero) {
  TempDir dir;
  const auto out = check_dataset(dir, kGood + "\n" + row("a", "b") + "\n\n");
  expect_findings(out, {}, 0);
  EXPECT_EQ(out.summary["rows"], 2);
  EXPECT_EQ(out.summary["formats"]["messages"], 2);
}

TEST(CheckDataFindings, InvalidJsonWithColumn) {
  TempDir dir;
  const auto out = check_dataset(dir, kGood + "\n{\"messages\": [}\n" + row("x", "y") + "\n{\"a\":\"\xff\"}\n");
  expect_findings(out, {{"invalid-json", 2}, {"invalid-json", 4}}, 1);
  EXPECT_EQ(out.finding_objects[0]["column"], 15);
}

TEST(CheckDataFindings, NumbersOutOfRange) {
  TempDir dir;
  // Integers beyond 64 bits are JSON (Python reads them); a float beyond double's range is not.
  const auto out = check_dataset(dir, R"({"id":123456789012345678901234567890,)" + kGood.substr(1) + "\n" +
                                          R"({"id":1e400,)" + kGood.substr(1) + "\n");
  expect_findings(out, {{"invalid-json", 2}}, 1);
  EXPECT_NE(out.finding_objects[0]["message"].get<std::string>().find("number overflow"), std::string::npos);
}

TEST(CheckDataFindings, LineTooLongIsSkippedAndReadingContinues) {
  TempDir dir;
  const std::string big = row(std::string(5000, 'x'), "y");
  const auto out = check_dataset(dir, kGood + "\n" + big + "\n[1]\n", {"--max_line_bytes", "1000"});
  expect_findings(out, {{"line-too-long", 2}, {"not-an-object", 3}}, 1);
}

TEST(CheckDataFindings, NestingTooDeep) {
  TempDir dir;
  const std::string deep = R"({"messages":)" + std::string(200, '[') + std::string(200, ']') + "}";
  expect_findings(check_dataset(dir, kGood + "\n" + deep + "\n"), {{"nesting-too-deep", 2}}, 1);
}

TEST(CheckDataFindings, NotAnObject) {
  TempDir dir;
  // A first line starting with '[' would make the file a JSON array, so the array row comes second.
  expect_findings(check_dataset(dir, "\"text\"\n[1]\n" + kGood + "\n3\n"),
                  {{"not-an-object", 1}, {"not-an-object", 2}, {"not-an-object", 4}}, 1);
}

TEST(CheckDataFindings, MissingAndEmptyMessages) {
  TempDir dir;
  expect_findings(check_dataset(dir, "{\"text\":\"x\"}\n{\"messages\":\"x\"}\n{\"messages\":[]}\n" + kGood + "\n"),
                  {{"missing-messages", 1}, {"missing-messages", 2}, {"empty-messages", 3}}, 1);
}

TEST(CheckDataFindings, UnknownRole) {
  TempDir dir;
  const std::string bad_role = R"({"messages":[{"role":"human","content":"q"},{"role":"assistant","content":"a"}]})";
  const std::string bad_from = R"({"conversations":[{"from":"human","value":"q"},{"from":"robot","value":"a"}]})";
  const std::string good_sharegpt = R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})";
  const auto out = check_dataset(dir, bad_role + "\n" + good_sharegpt + "\n" + bad_from + "\n");
  // Dropping the unknown message also leaves the rest out of order.
  expect_findings(out, {{"unknown-role", 1}, {"bad-order", 1}, {"unknown-role", 3}, {"no-response", 3}}, 1);
  EXPECT_EQ(out.summary["formats"]["sharegpt"], 2);
}

TEST(CheckDataFindings, BadOrder) {
  TempDir dir;
  const std::string system_second =
      R"({"messages":[{"role":"user","content":"q"},{"role":"system","content":"s"},{"role":"assistant","content":"a"}]})";
  const std::string assistant_first = R"({"messages":[{"role":"assistant","content":"a"},{"role":"user","content":"q"}]})";
  const std::string user_user =
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})";
  const std::string tools =
      R"({"messages":[{"role":"user","content":"q"},{"role":"tool_call","content":"{}"},{"role":"tool_response","content":"r"},{"role":"assistant","content":"a"}]})";
  expect_findings(check_dataset(dir, system_second + "\n" + assistant_first + "\n" + user_user + "\n" + tools + "\n"),
                  {{"bad-order", 1}, {"bad-order", 2}, {"bad-order", 3}}, 1);
}

TEST(CheckDataFindings, NoResponseIsAWarning) {
  TempDir dir;
  expect_findings(check_dataset(dir, R"({"messages":[{"role":"user","content":"q"}]})" "\n" R"({"query":"q"})" "\n"),
                  {{"no-response", 1}, {"no-response", 2}}, 0);
}

TEST(CheckDataFindings, NonStringContent) {
  TempDir dir;
  const std::string list = R"({"messages":[{"role":"user","content":[{"type":"text","text":"q"}]},{"role":"assistant","content":"a"}]})";
  const std::string missing = R"({"messages":[{"role":"user","content":"q"},{"role":"assistant"}]})";
  expect_findings(check_dataset(dir, list + "\n" + missing + "\n"), {{"non-string-content", 1}, {"non-string-content", 2}}, 1);
}

TEST(CheckDataFindings, EmptyResponse) {
  TempDir dir;
  expect_findings(check_dataset(dir, row("q", "") + "\n" + row("q", " \n") + "\n" + R"({"instruction":"i","output":""})" "\n"),
                  {{"empty-response", 1}, {"empty-response", 2}, {"empty-response", 3}}, 1);
}

TEST(CheckDataFindings, MediaTagCounts) {
  TempDir dir;
  write_file(dir / "a.png", png_bytes(56, 56));
  const std::string ok_tags = row("<image><image>q", "a", R"(,"images":["a.png","a.png"])");
  const std::string no_tags = row("q", "a", R"(,"images":["a.png"])");  // swift adds the tag itself
  const std::string too_many = row("<image><image>q", "a", R"(,"images":["a.png"])");
  const std::string no_images = row("<image>q", "b");
  const std::string videos = row("<video>q", "c", R"(,"videos":[])");
  const std::string audios = row("<audio><audio>q", "d", R"(,"audios":["x.wav"])");
  const auto out = check_dataset(dir, ok_tags + "\n" + no_tags + "\n" + too_many + "\n" + no_images + "\n" + videos + "\n" + audios + "\n");
  expect_findings(out, {{"image-count-mismatch", 3}, {"image-count-mismatch", 4}, {"video-count-mismatch", 5},
                        {"audio-count-mismatch", 6}, {"media-missing", 6}},
                  1);
}

TEST(CheckDataFindings, BadMediaEntryAndSingularImageKey) {
  TempDir dir;
  write_file(dir / "a.png", png_bytes(56, 56));
  const auto out = check_dataset(dir, row("q", "a", R"(,"images":[3])") + "\n" + row("q", "b", R"(,"image":"a.png")") + "\n" +
                                          row("q", "c", R"(,"images":[{"path":"a.png"}])") + "\n");
  expect_findings(out, {{"bad-media-entry", 1}, {"singular-image-key", 2}}, 1);
}

TEST(CheckDataFindings, PathInContent) {
  TempDir dir;
  const auto out = check_dataset(dir, row("Describe /data/imgs/cat.JPG please", "a cat") + "\n" + row("see (b.png).", "x") + "\n" +
                                          row("a file.txt and v1.5 numbers", "no") + "\n");
  expect_findings(out, {{"path-in-content", 1}, {"path-in-content", 2}}, 1);
}

TEST(CheckDataFindings, DuplicateRowsIgnoreWhitespace) {
  TempDir dir;
  const std::string spaced = R"({ "messages" : [ {"role":"user", "content":"hi"}, {"role":"assistant","content":"hello"} ] })";
  const auto out = check_dataset(dir, kGood + "\n" + row("a", "b") + "\n" + spaced + "\n");
  expect_findings(out, {{"duplicate-row", 3}}, 0);
  EXPECT_NE(out.finding_objects[0]["message"].get<std::string>().find("data.jsonl:1"), std::string::npos);
}

TEST(CheckDataFindings, InconsistentEndMarkers) {
  TempDir dir;
  expect_findings(check_dataset(dir, kGood + "\n" + row("q", "a</s>") + "\n" + row("q", "b<|im_end|>\n") + "\n"),
                  {{"inconsistent-end-marker", 2}, {"inconsistent-end-marker", 3}}, 0);
  // All marked: consistent, nothing to report.
  TempDir dir2;
  expect_findings(check_dataset(dir2, row("q", "a</s>") + "\n" + row("r", "b</s>") + "\n"), {}, 0);
}

TEST(CheckDataFindings, RemoteMediaIsNeverFetched) {
  TempDir dir;
  const auto out = check_dataset(dir, row("q", "a", R"(,"images":["https://example.invalid/a.png"])") + "\n");
  expect_findings(out, {{"remote-media", 1}}, 0);
  EXPECT_EQ(out.summary["remote_media"], 1);
}

TEST(CheckDataFindings, ImageFileProblems) {
  TempDir dir;
  write_file(dir / "ok.png", png_bytes(640, 480));
  write_file(dir / "cut.png", png_bytes(640, 480).substr(0, 20));
  write_file(dir / "text.png", "not an image at all");
  write_file(dir / "really_png.jpg", png_bytes(100, 100));
  write_file(dir / "thin.png", png_bytes(1, 300));
  fs::create_directory(dir / "folder.png");
  fs::create_symlink(dir / "loop_b.png", dir / "loop_a.png");
  fs::create_symlink(dir / "loop_a.png", dir / "loop_b.png");
  auto with = [](const std::string& image) { return row("<image>q", "a", R"(,"images":[")" + image + R"("])") + "\n"; };
  const auto out = check_dataset(dir, with("ok.png") + with("nope.png") + with("loop_a.png") + with("text.png") +
                                          with("folder.png") + with("cut.png") + with("really_png.jpg") + with("thin.png") +
                                          with("ok.png"));
  expect_findings(out, {{"image-missing", 2}, {"image-unreadable", 3}, {"not-an-image", 4}, {"not-an-image", 5},
                        {"image-corrupt", 6}, {"image-wrong-extension", 7}, {"image-aspect-ratio", 8}, {"duplicate-row", 9}},
                  1);
  EXPECT_EQ(out.summary["images_checked"], 8);  // each distinct file once
  EXPECT_EQ(out.summary["largest_image"]["width"], 640);
  EXPECT_EQ(out.summary["largest_image"]["tokens"], 17 * 23);  // 480x640 -> 476x644
}

TEST(CheckDataFindings, FilesCutShortAreFoundWithoutDeep) {
  TempDir dir;
  const std::string png = encoded_png(64, 48), jpeg = encoded_jpeg(64, 48), webp = encoded_webp(64, 48);
  write_file(dir / "third.png", png.substr(0, png.size() / 3));  // the header reads, the pixels are gone
  write_file(dir / "cut.jpg", jpeg.substr(0, jpeg.size() - 100));
  write_file(dir / "cut.webp", webp.substr(0, webp.size() - 10));
  write_file(dir / "whole.png", png);
  auto with = [](const std::string& image) { return row("<image>q", "a", R"(,"images":[")" + image + R"("])") + "\n"; };
  const auto out = check_dataset(dir, with("third.png") + with("cut.jpg") + with("cut.webp") + row("<image>w", "a", R"(,"images":["whole.png"])"));
  expect_findings(out, {{"image-corrupt", 1}, {"image-corrupt", 2}, {"image-corrupt", 3}}, 1);
  EXPECT_NE(out.finding_objects[0]["message"].get<std::string>().find("cut short"), std::string::npos) << out.result.out;
  EXPECT_NE(out.finding_objects[1]["message"].get<std::string>().find("FF D9"), std::string::npos) << out.result.out;
}

TEST(CheckDataFindings, ExifRotatedImagesAreWarnedAbout) {
  TempDir dir;
  write_file(dir / "turned.jpg", jpeg_with_orientation(64, 32, 6, false));
  write_file(dir / "upright.jpg", jpeg_with_orientation(64, 32, 1, false));
  const auto out = check_dataset(dir, row("<image>q", "a", R"(,"images":["turned.jpg"])") + "\n" +
                                          row("<image>r", "a", R"(,"images":["upright.jpg"])") + "\n");
  expect_findings(out, {{"image-exif-rotated", 1}}, 0);
  const std::string message = out.finding_objects[0]["message"].get<std::string>();
  EXPECT_NE(message.find("orientation 6 (rotate 90° clockwise)"), std::string::npos) << message;
  EXPECT_NE(message.find("unrotated"), std::string::npos) << message;
  // Training sees the stored 64x32 pixels: the token count is the unrotated image's.
  EXPECT_EQ(out.summary["largest_image"]["width"], 64);
}

TEST(CheckDataFindings, BaseDirResolvesRelativePaths) {
  TempDir dir;
  fs::create_directory(dir / "imgs");
  write_file(dir / "imgs" / "a.gif", gif_bytes(100, 100));
  const std::string dataset = row("q", "a", R"(,"images":["a.gif"])") + "\n";
  expect_findings(check_dataset(dir, dataset), {{"image-missing", 1}}, 1);
  expect_findings(check_dataset(dir, dataset, {"--base_dir", (dir / "imgs").string()}), {}, 0);
}

TEST(CheckDataFindings, TooLongCountsTextAndImageTokens) {
  TempDir dir;
  fs::create_directory(dir / "model");
  fs::copy_file(shared_dir() / "tokenizer" / "tokenizer.json", dir / "model" / "tokenizer.json");
  write_file(dir / "model" / "config.json", R"({"model_type":"qwen2_5_vl"})");
  write_file(dir / "big.png", png_bytes(280, 280));  // 10 x 10 cells = 100 image tokens
  const std::string model = (dir / "model").string();
  const auto out = check_dataset(dir, row("hi", "hello") + "\n" + row("<image>hi", "hello", R"(,"images":["big.png"])") + "\n",
                                 {"--model", model, "--max_length", "60"});
  expect_findings(out, {{"too-long", 2}}, 1);
  EXPECT_EQ(out.summary["tokens"]["image"]["max"], 100);
  EXPECT_EQ(out.summary["tokens"]["total"]["max"].get<uint64_t>(), out.summary["tokens"]["text"]["max"].get<uint64_t>() + 100);
  // A smaller pixel budget brings the same image under the limit.
  const auto small = check_dataset(dir, row("<image>hi", "hello", R"(,"images":["big.png"])") + "\n",
                                   {"--model", model, "--max_length", "60", "--max_pixels", "3136"});
  expect_findings(small, {}, 0);
  EXPECT_EQ(small.summary["tokens"]["image"]["max"], 4);
}

}  // namespace
}  // namespace vlmforge::test
