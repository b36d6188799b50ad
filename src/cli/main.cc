// vlmforge: the command-line front end. Subcommands are registered from src/cli/cmd_*.cc.
#include <csignal>
#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"
#include "util/bytes.h"
#include "util/error.h"
#include "util/simd_targets.h"

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) should surface as a write error we can report, not a kill.
  std::signal(SIGXFSZ, SIG_IGN);

  CLI::App app{
      "vlmforge: the last mile after fine-tuning Qwen2.5 / Qwen2.5-VL: merge LoRA adapters in bounded memory,\n"
      "verify merges, run text and image inference, plan and run placements across memory-limited devices,\n"
      "check datasets, serve an OpenAI-compatible API, tokenize, inspect and generate checkpoints. Computes on the CPU.\n"
      "Exit codes: 0 success, 1 failure (bad input, failed operation), 2 usage error."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vlmforge 0.1.0");
  int exit_code = vlmforge::cli::kExitOk;
  vlmforge::cli::add_inspect_command(app, exit_code);
  vlmforge::cli::add_merge_lora_command(app, exit_code);
  vlmforge::cli::add_export_command(app, exit_code);
  vlmforge::cli::add_generate_command(app, exit_code);
  vlmforge::cli::add_demo_command(app, exit_code);
  vlmforge::cli::add_tokenize_command(app, exit_code);
  vlmforge::cli::add_infer_command(app, exit_code);
  vlmforge::cli::add_score_command(app, exit_code);
  vlmforge::cli::add_check_data_command(app, exit_code);
  vlmforge::cli::add_deploy_command(app, exit_code);
  vlmforge::cli::add_devices_command(app, exit_code);
  vlmforge::cli::add_plan_command(app, exit_code);
  vlmforge::cli::add_verify_merge_command(app, exit_code);
  try {
    vlmforge::limit_simd_target_from_environment();
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : vlmforge::cli::kExitUsage;
  } catch (const vlmforge::UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return vlmforge::cli::kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory (%s available); reduce the work size or free memory\n",
                 vlmforge::format_bytes(vlmforge::available_memory_bytes()).c_str());
    return vlmforge::cli::kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return vlmforge::cli::kExitFailure;
  }
  return exit_code;
}
