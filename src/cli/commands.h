#pragma once
// Each subcommand lives in its own cmd_<name>.cc and registers itself on the root app. The
// callback it installs runs the command and returns the process exit code through `exit_code`.
#include <CLI/CLI.hpp>

namespace vlmforge::cli {

// Exit codes shared by all subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // bad input, failed operation, or (check-data) findings
inline constexpr int kExitUsage = 2;    // bad flags or arguments

void add_inspect_command(CLI::App& app, int& exit_code);
void add_merge_lora_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
void add_demo_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_infer_command(CLI::App& app, int& exit_code);
void add_score_command(CLI::App& app, int& exit_code);
void add_check_data_command(CLI::App& app, int& exit_code);
void add_deploy_command(CLI::App& app, int& exit_code);
void add_devices_command(CLI::App& app, int& exit_code);
void add_plan_command(CLI::App& app, int& exit_code);
void add_verify_merge_command(CLI::App& app, int& exit_code);
void add_export_command(CLI::App& app, int& exit_code);

}  // namespace vlmforge::cli
