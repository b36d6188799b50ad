#include "cli/engine_flags.h"

#include "cli/vision_flags.h"

namespace vlmforge::cli {

CLI::Option* add_model_flags(CLI::App* cmd, EngineFlags& f) {
  CLI::Option* model = cmd->add_option("--model", f.model, "Model directory (config.json, *.safetensors, tokenizer.json)");
  cmd->add_option("--threads", f.threads, "Worker threads (default: all cores)");
  cmd->add_option("--quant_method", f.quant_method,
                  "Quantize a bf16/f16/f32 model while loading it: q8_0 or q4_0 (llama.cpp's blocks of 32 with an "
                  "fp16 scale) for the decoder's and lm_head's linears whose input size is a multiple of 32; AWQ / "
                  "GPTQ checkpoints run as published without it")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  cmd->add_option("--device_map", f.device_map.placement.device_map,
                  "Run across devices: auto / balanced / sequential (planned as `vlmforge plan` does) or a Hugging "
                  "Face-format JSON map (module -> device)");
  cmd->add_option("--devices", f.device_map.placement.devices,
                  "Devices for --device_map: cpu:0,cpu:1,cpu:2 (default cpu:0)");
  cmd->add_option("--max_memory", f.device_map.placement.max_memory,
                  "Most memory per device (accelerate's max_memory): 2GiB for every device, or cpu:0=2GiB,cpu:1=1GiB");
  cmd->add_option("--reserve", f.device_map.placement.reserve, "Memory kept free per device (default 0 on cpu)");
  cmd->add_flag("--memory_report", f.device_map.memory_report,
                "After the run, print each device's peak accounted memory next to the plan's estimate (without "
                "--device_map: the one host device; its plan counts KV caches at max_model_len, which grown "
                "caches reach only for sequences that long)");
  cmd->add_option("--pipeline_timeout", f.pipeline_timeout,
                  "Under mpirun -np N (a pipeline of N ranks): seconds a rank may take for its part of a step before "
                  "rank 0 reports it as stopped and ends the job")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  return model;
}

void add_generation_flags(CLI::App* cmd, EngineFlags& f) {
  add_model_flags(cmd, f)->description(
      "Model directory (config.json, *.safetensors, tokenizer.json); with --adapters CKPT, default: the base "
      "model its args.json / adapter_config.json names, as swift's --load_args");
  add_adapter_flag(cmd, f);
  cmd->add_option("--max_model_len", f.max_model_len, "Longest sequence (prompt + answer); default from config.json");
  cmd->add_option("--kv_cache_dtype", f.kv_cache_dtype, "KV cache storage: bfloat16 halves its memory")
      ->check(CLI::IsMember({"float32", "bfloat16"}))
      ->capture_default_str();
  add_image_flags(cmd, f);
  cmd->add_option("--image_cache_mb", f.image_cache_mb, "Memory for cached vision embeddings (LRU by image content)")
      ->capture_default_str();
}

void add_image_flags(CLI::App* cmd, EngineFlags& f) {
  cmd->add_option("--max_pixels", f.max_pixels, "Image pixel budget upper bound (default: MAX_PIXELS env or 12845056)");
  cmd->add_option("--min_pixels", f.min_pixels, "Image pixel budget lower bound (default: MIN_PIXELS env or 3136)");
  cmd->add_flag("--exif_transpose", f.exif_transpose,
                "Turn EXIF-rotated photos upright (PIL's ImageOps.exif_transpose) before resizing; off by default, "
                "as swift and qwen_vl_utils train and infer on the stored pixels");
}

void add_adapter_flag(CLI::App* cmd, EngineFlags& f) {
  cmd->add_option("--adapters,--lora", f.adapters, "PEFT LoRA adapters applied unmerged (same outputs as the merged model)");
}

EngineOptions engine_options(const EngineFlags& flags) {
  EngineOptions options;
  options.model_dir = flags.model;
  options.adapter_dirs.assign(flags.adapters.begin(), flags.adapters.end());
  options.threads = flags.threads;
  options.vision = {pixel_budget_flags(flags.min_pixels, flags.max_pixels), uint64_t{flags.image_cache_mb} << 20,
                    {flags.exif_transpose}};
  options.kv_cache_dtype = flags.kv_cache_dtype == "bfloat16" ? DType::BF16 : DType::F32;
  options.max_model_len = flags.max_model_len;
  if (flags.quant_method == "q8_0") options.quantize_on_load = kernels::QuantScheme::q8_0();
  if (flags.quant_method == "q4_0") options.quantize_on_load = kernels::QuantScheme::q4_0();
  return options;
}

int run_with_engine(PipelineTransport* transport, const EngineFlags& flags, const EngineOptions& options,
                    const PlanOptions& plan_options, const std::function<int(const PlacedEngine&)>& run) {
  if (!transport) return run(load_engine(options, flags.device_map, plan_options));
  return run_pipeline_rank(*transport, options, flags.device_map, plan_options, flags.pipeline_timeout,
                           [&](PlacedEngine& placed) { return run(placed); });
}

}  // namespace vlmforge::cli
