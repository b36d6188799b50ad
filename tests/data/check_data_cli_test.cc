// check-data as a command: --fix output, JSON arrays, stdin, exit codes, usage errors.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/check_data_fixture.h"
#include "vision/encoded_images.h"
#include "vision/image_bytes.h"

namespace vlmforge::test {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CheckDataCli, FixMovesPathsRenamesImageAndDropsMissing) {
  TempDir dir;
  write_file(dir / "cat.png", png_bytes(64, 64));
  const std::string dataset =
      R"({"messages":[{"role":"user","content":"Describe cat.png please"},{"role":"assistant","content":"a cat"}]})" "\n"
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"image":"cat.png"})" "\n"
      R"({"messages":[{"role":"user","content":"<image>x"},{"role":"assistant","content":"y"}],"images":["gone.png"]})" "\n"
      R"({"messages":[{"role":"user","content":"look at gone.jpg"},{"role":"assistant","content":"z"}]})" "\n"
      "not json\n"
      R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})" "\n";
  const fs::path fixed = dir / "fixed.jsonl";
  const auto out = check_dataset(dir, dataset, {"--fix", fixed.string()});
  EXPECT_EQ(out.result.exit_code, 1);
  EXPECT_EQ(read_file(fixed),
            R"({"messages":[{"role":"user","content":"Describe <image> please"},{"role":"assistant","content":"a cat"}],"images":["cat.png"]})" "\n"
            R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}],"images":["cat.png"]})" "\n"
            R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})" "\n");
  EXPECT_EQ(out.summary["fix"]["written"], 3);
  EXPECT_EQ(out.summary["fix"]["changed"], 2);
  EXPECT_EQ(out.summary["fix"]["dropped"], 3);
  // The corrected copy checks clean.
  const auto again = parse_check_output(run_vlmforge({"check-data", "--json", fixed.string()}));
  EXPECT_EQ(again.result.exit_code, 0) << again.result.out;
  EXPECT_TRUE(again.findings.empty());
  EXPECT_FALSE(fs::exists(fixed.string() + ".tmp"));
}

TEST(CheckDataCli, DeepDecodeFindsDamagedDataTheStructureHides) {
  TempDir dir;
  const std::string png = encoded_png(64, 64);
  std::string damaged = png;  // every chunk complete, the image data inside IDAT garbled
  for (size_t i = png.size() / 2; i < png.size() / 2 + 16; ++i) damaged[i] = static_cast<char>(damaged[i] ^ 0x5A);
  write_file(dir / "good.png", png);
  write_file(dir / "cut.png", damaged);
  const std::string dataset = R"({"messages":[{"role":"user","content":"<image>a"},{"role":"assistant","content":"b"}],"images":["good.png"]})" "\n"
                              R"({"messages":[{"role":"user","content":"<image>c"},{"role":"assistant","content":"d"}],"images":["cut.png"]})" "\n";
  EXPECT_TRUE(check_dataset(dir, dataset).findings.empty());
  const auto deep = check_dataset(dir, dataset, {"--deep"});
  EXPECT_EQ(deep.findings, (std::vector<CodeLine>{{"image-corrupt", 2}}));
  EXPECT_EQ(deep.result.exit_code, 1);
}

TEST(CheckDataCli, JsonArrayInputWithLines) {
  TempDir dir;
  const std::string dataset = "[\n  {\"query\": \"q\", \"response\": \"r\"},\n  {\"instruction\": \"i\",\n   \"output\": \"\"},\n  [1]\n]\n";
  const auto out = check_dataset(dir, dataset, {}, "data.json");
  EXPECT_EQ(out.findings, (std::vector<CodeLine>{{"empty-response", 3}, {"not-an-object", 5}}));
  EXPECT_EQ(out.summary["formats"]["query-response"], 1);
  EXPECT_EQ(out.summary["formats"]["alpaca"], 1);
}

TEST(CheckDataCli, StdinAndTextOutput) {
  const auto result = run_vlmforge({"check-data", "-"}, {.stdin_text = "{\"messages\":[]}\n"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.out.find("-:1: error[empty-messages]"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("1 rows"), std::string::npos);
}

TEST(CheckDataCli, BinaryGarbageAndNulBytes) {
  TempDir dir;
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage += static_cast<char>((i * 7919) % 256);
  const auto out = check_dataset(dir, garbage + "\n{\"a\":\"\0\"}\n" + std::string(1, '\0') + "\n");
  EXPECT_EQ(out.result.exit_code, 1);
  for (const auto& [code, line] : out.findings) EXPECT_TRUE(code == "invalid-json" || code == "not-an-object") << code;
}

TEST(CheckDataCli, MaxErrorsLimitsPrintingNotCounting) {
  TempDir dir;
  const auto out = check_dataset(dir, "1\n2\n3\n4\n", {"--max_errors", "2"});
  EXPECT_EQ(out.findings.size(), 2u);
  EXPECT_EQ(out.summary["errors"], 4);
  EXPECT_EQ(out.summary["errors_not_shown"], 2);
}

TEST(CheckDataCli, SameFindingsWithOneOrManyThreads) {
  TempDir dir;
  write_file(dir / "a.png", png_bytes(300, 200));
  std::string dataset;
  for (int i = 0; i < 5000; ++i) {
    // Numbers, not arrays: a first line starting with '[' would make the file a JSON array.
    dataset += i % 7 == 0 ? std::to_string(i).append("\n")
               : i % 5 == 0 ? R"({"messages":[{"role":"user","content":"<image>q"},{"role":"assistant","content":"a"}],"images":["a.png","b.png"]})" "\n"
                            : R"({"messages":[{"role":"user","content":"q)" + std::to_string(i % 50) + R"("},{"role":"assistant","content":"a"}],"images":["a.png"]})" "\n";
  }
  const auto one = check_dataset(dir, dataset, {"--threads", "1"});
  const auto many = check_dataset(dir, dataset, {"--threads", "4"});
  EXPECT_EQ(one.result.out, many.result.out);
  EXPECT_EQ(one.summary["rows"], 5000);
  EXPECT_EQ(one.summary["images_checked"], 2);
}

TEST(CheckDataCli, UsageAndIoErrorsExitTwo) {
  TempDir dir;
  EXPECT_EQ(run_vlmforge({"check-data", (dir / "missing.jsonl").string()}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"check-data", dir.path().string()}).exit_code, 2);
  write_file(dir / "d.jsonl", "{}\n");
  EXPECT_EQ(run_vlmforge({"check-data", (dir / "d.jsonl").string(), "--max_length", "10"}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"check-data", (dir / "d.jsonl").string(), "--base_dir", (dir / "nope").string()}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"check-data", (dir / "d.jsonl").string(), "--fix", (dir / "d.jsonl").string()}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"check-data", (dir / "d.jsonl").string(), "--min_pixels", "lots"}).exit_code, 2);
  EXPECT_EQ(run_vlmforge({"check-data"}).exit_code, 2);
  fs::create_symlink(dir / "loop2.jsonl", dir / "loop1.jsonl");
  fs::create_symlink(dir / "loop1.jsonl", dir / "loop2.jsonl");
  const auto loop = run_vlmforge({"check-data", (dir / "loop1.jsonl").string()});
  EXPECT_EQ(loop.exit_code, 2);
  EXPECT_NE(loop.err.find("loop1.jsonl"), std::string::npos) << loop.err;
}

// A rename over the --fix path would replace whatever is there: a FIFO, a symbolic link (and not
// its target), a read-only file, a directory. Each is refused (usage error) and left as it was.
TEST(CheckDataCli, FixRefusesOutputsThatAreNotWritableRegularFiles) {
  TempDir dir;
  write_file(dir / "d.jsonl", "{\"query\": \"q\", \"response\": \"r\"}\n");
  const std::string input = (dir / "d.jsonl").string();
  ASSERT_EQ(mkfifo((dir / "pipe").c_str(), 0644), 0);
  write_file(dir / "target.jsonl", "keep\n");
  fs::create_symlink(dir / "target.jsonl", dir / "link.jsonl");
  write_file(dir / "readonly.jsonl", "keep\n");
  fs::permissions(dir / "readonly.jsonl", fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  fs::create_directory(dir / "folder");
  fs::create_hard_link(dir / "d.jsonl", dir / "same-inode.jsonl");
  struct Case {
    std::string name, expected;
  };
  for (const Case& c : {Case{"pipe", "FIFO"}, Case{"link.jsonl", "symbolic link"}, Case{"readonly.jsonl", "read-only"},
                        Case{"folder", "directory"}, Case{"same-inode.jsonl", "is the input"}}) {
    const auto r = run_vlmforge({"check-data", input, "--fix", (dir / c.name).string()}, {.timeout_seconds = 60});
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.name << ": " << r.err;
  }
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(dir / "pipe")));
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir / "link.jsonl")));
  EXPECT_EQ(read_file(dir / "target.jsonl"), "keep\n");
  EXPECT_EQ(read_file(dir / "readonly.jsonl"), "keep\n");
  EXPECT_EQ(read_file(dir / "d.jsonl"), "{\"query\": \"q\", \"response\": \"r\"}\n");
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

// --fix - is standard output (the corrected rows alone); the report moves to stderr.
TEST(CheckDataCli, FixDashWritesTheCorrectedRowsToStdout) {
  const std::string dataset = "{\"query\": \"q\", \"response\": \"r\"}\nnot json\n";
  const auto r = run_vlmforge({"check-data", "-", "--fix", "-"}, {.stdin_text = dataset, .timeout_seconds = 60});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out, "{\"query\": \"q\", \"response\": \"r\"}\n");
  EXPECT_NE(r.err.find("-:2:2: error[invalid-json]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--fix: wrote 1 rows to standard output"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists("-"));  // no file named "-" in the working directory
  std::error_code ec;
  fs::remove("-", ec);
}

// A FIFO as an image used to block open() forever; a device is not an image either. Both are
// reported as not-an-image without being opened, header checks and --deep alike.
TEST(CheckDataCli, ImagesThatAreNotRegularFilesAreFindingsNotHangs) {
  TempDir dir;
  ASSERT_EQ(mkfifo((dir / "pipe.png").c_str(), 0644), 0);
  const std::string dataset =
      R"({"messages":[{"role":"user","content":"<image>a"},{"role":"assistant","content":"b"}],"images":["pipe.png"]})" "\n"
      R"({"messages":[{"role":"user","content":"<image>c"},{"role":"assistant","content":"d"}],"images":["/dev/zero"]})" "\n";
  write_file(dir / "data.jsonl", dataset);
  for (const std::vector<std::string>& extra : {std::vector<std::string>{}, std::vector<std::string>{"--deep"}}) {
    std::vector<std::string> args{"check-data", "--json", (dir / "data.jsonl").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto out = parse_check_output(run_vlmforge(args, {.timeout_seconds = 60}));
    EXPECT_EQ(out.result.exit_code, 1) << out.result.err;
    EXPECT_EQ(out.findings, (std::vector<CodeLine>{{"not-an-image", 1}, {"not-an-image", 2}})) << out.result.out;
    ASSERT_EQ(out.finding_objects.size(), 2u);
    EXPECT_NE(out.finding_objects[0]["message"].get<std::string>().find("FIFO"), std::string::npos);
    EXPECT_NE(out.finding_objects[1]["message"].get<std::string>().find("character device"), std::string::npos);
  }
}

}  // namespace
}  // namespace vlmforge::test
