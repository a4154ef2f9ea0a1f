// `kvstream selective-profile`: decodes each context with selective KV
// loading (InfiniGen and the baselines of llm/selective.h) at several budgets
// and alphas, and writes the fetched fractions and quality as JSON
// (docs/selective-format.md) plus a table.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "base/error.h"
#include "base/files.h"
#include "base/progress.h"
#include "llm/checkpoint.h"
#include "llm/model.h"
#include "llm/profiler.h"
#include "llm/selective.h"
#include "llm/tokenizer.h"

namespace kvs::apps {
namespace {

using nlohmann::json;

std::vector<double> parse_list(const std::string& text, const std::string& option) {
  std::vector<double> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(fmt::format("{} '{}': '{}' is not a number", option, text, item));
    }
  }
  if (out.empty()) throw Error(fmt::format("{}: empty list", option));
  return out;
}

json result_json(const llm::SelectiveResult& r) {
  return json{{"fraction_fetched_per_layer", r.fetched_per_layer},
              {"fraction_fetched_by_step", r.fetched_by_step},
              {"recall_per_layer", r.recall_per_layer},
              {"fraction_fetched", r.fetched},
              {"recall", r.recall},
              {"attention_mass", r.mass},
              {"kl_divergence", r.kl_divergence},
              {"loss_increase", r.loss_increase},
              {"greedy_agreement", r.greedy_agreement},
              {"task_accuracy", r.task_accuracy},
              {"steps", r.steps}};
}

// Element-wise mean of equally long vectors (rows of by-step tables may differ: shortest wins).
std::vector<double> mean_vectors(const std::vector<std::vector<double>>& vs) {
  std::vector<double> out(vs.empty() ? 0 : vs[0].size(), 0.0);
  for (const auto& v : vs)
    for (size_t i = 0; i < out.size() && i < v.size(); ++i) out[i] += v[i] / double(vs.size());
  return out;
}

}  // namespace

void add_selective_command(CLI::App& app) {
  struct Args {
    std::string model_dir, contexts, output, warmup, methods = "full,infinigen,oracle,streaming,h2o";
    std::string budgets = "0.05,0.1,0.2,0.4", alphas = "3,4,5", kv_dtype = "fp16";
    double ratio = 0.2;
    int64_t lookahead = 1, full_front_layers = 2, sink_tokens = 4;
    // 2048 warm-up tokens as InfiniGen's gen_llama_skewing_matrix.py: the skew is computed after RoPE, so
    // it holds for the positions the warm-up covered (with 1024 on 2048-token contexts, layer 3's recall
    // fell from 0.71 to 0.18).
    int64_t loss_tokens = 64, greedy_tokens = 64, warmup_tokens = 2048;
    bool full_last_layer = false, no_skew = false, warmup_channels = false;
    size_t max_contexts = 8;  // the default run stays at a few minutes
    uint32_t max_context_tokens = 0;
    int threads = 1;  // decoding steps are small: a second thread's spinning made a context 4x slower here
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "selective-profile",
      "Decode contexts with selective KV loading (InfiniGen; oracle top-k, StreamingLLM and H2O baselines) at "
      "several budgets; measure fetched KV fraction per layer, recall, KL, loss, agreement and task accuracy "
      "(JSON, docs/selective-format.md)");
  cmd->add_option("--model", args->model_dir, "HF checkpoint folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--contexts", args->contexts, "Contexts: JSON lines {id, context, continuation, question?, answer?}")
      ->required();
  cmd->add_option("-o,--output", args->output, "JSON to write (resumes from OUTPUT.partial)")->required();
  cmd->add_option("--methods", args->methods, "Comma-separated: full, infinigen, oracle, streaming, h2o")
      ->capture_default_str();
  cmd->add_option("--budgets", args->budgets,
                  "Budgets in (0, 1]: fractions of the past tokens a layer's full attention reads (all of them; on "
                  "a sliding-window layer the window's min(past, W-1))")
      ->capture_default_str();
  cmd->add_option("--alphas", args->alphas, "InfiniGen's alpha values (score distance from the maximum)")
      ->capture_default_str();
  cmd->add_option("--ratio", args->ratio, "InfiniGen's partial weight ratio (channels kept per head)")
      ->capture_default_str()->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--full-front-layers", args->full_front_layers, "InfiniGen: layers loaded in full from the first")
      ->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--lookahead", args->lookahead,
                  "InfiniGen: layer l-N's input speculates layer l (1 as the paper; 0: the layer's own input, an "
                  "ablation isolating the partial channels)")
      ->capture_default_str()->check(CLI::Range(0, 16));
  cmd->add_flag("--no-skew", args->no_skew,
                "InfiniGen without skewing (identity matrices): an ablation measuring what skewing adds");
  cmd->add_flag("--warmup-channels", args->warmup_channels,
                "InfiniGen: take the partial channels from the warm-up for every context instead of picking them at "
                "each context's prefill (InfiniGen's prefill stage): an ablation");
  cmd->add_flag("--full-last-layer", args->full_last_layer,
                "InfiniGen: load the last layer in full too (InfiniGen's code speculates it)");
  cmd->add_option("--sink-tokens", args->sink_tokens, "StreamingLLM: attention-sink tokens kept")
      ->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--loss-tokens", args->loss_tokens, "Continuation tokens scored (teacher-forced decoding steps)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--greedy-tokens", args->greedy_tokens, "Greedy tokens generated for agreement")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--warmup", args->warmup, "Text file for InfiniGen's skewing warm-up (default: the first context)");
  cmd->add_option("--warmup-tokens", args->warmup_tokens, "Tokens of the warm-up prefill")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  cmd->add_option("--kv-dtype", args->kv_dtype, "Precision the KV cache is fetched in (for bytes): fp16, bf16, fp32")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--max-contexts", args->max_contexts, "At most this many contexts (0: all)")->capture_default_str();
  cmd->add_option("--max-context-tokens", args->max_context_tokens, "Truncate contexts (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads")->capture_default_str()->check(CLI::Range(1, 1024));

  cmd->callback([args] {
    const auto t_start = std::chrono::steady_clock::now();
    llm::set_cpu_threads(args->threads);
    const llm::Model model = llm::load_model(args->model_dir, {});
    const auto tokenizer = llm::load_tokenizer(args->model_dir, model.config());
    auto contexts = llm::load_contexts(args->contexts);
    if (args->max_contexts && contexts.size() > args->max_contexts) contexts.resize(args->max_contexts);
    const llm::ModelConfig& mc = model.config();

    // The settings: full once, InfiniGen per budget and alpha, baselines per budget.
    std::vector<llm::SelectionConfig> settings;
    const auto budgets = parse_list(args->budgets, "--budgets");
    const auto alphas = parse_list(args->alphas, "--alphas");
    for (double b : budgets)
      if (!(b > 0 && b <= 1)) throw Error(fmt::format("--budgets: {} is not in (0, 1]", b));
    for (double a : alphas)
      if (!(a > 0)) throw Error(fmt::format("--alphas: {} must be > 0", a));
    std::stringstream ms(args->methods);
    bool need_calibration = false;
    for (std::string name; std::getline(ms, name, ',');) {
      if (name.empty()) continue;
      llm::SelectionConfig base;
      base.method = llm::method_from_name(name);
      base.full_front_layers = args->full_front_layers;
      base.full_last_layer = args->full_last_layer;
      base.lookahead = args->lookahead;
      base.warmup_channels = args->warmup_channels;
      base.sink_tokens = args->sink_tokens;
      if (base.method == llm::SelectMethod::kFull) {
        settings.push_back(base);
        continue;
      }
      for (double b : budgets) {
        base.budget = b;
        if (base.method != llm::SelectMethod::kInfiniGen) {
          settings.push_back(base);
          continue;
        }
        need_calibration = true;
        for (double a : alphas) {
          base.alpha = a;
          settings.push_back(base);
        }
      }
    }
    if (settings.empty()) throw Error("--methods: no method given");

    llm::SkewCalibration calibration;
    int64_t warmup_used = 0;
    if (need_calibration) {
      std::vector<int64_t> warm = args->warmup.empty() ? tokenizer->encode(contexts[0].context, true)
                                                       : tokenizer->encode(read_file(args->warmup), true);
      if (int64_t(warm.size()) > args->warmup_tokens) warm.resize(size_t(args->warmup_tokens));
      warmup_used = int64_t(warm.size());
      calibration = llm::calibrate_skewing(model, warm, args->ratio, !args->no_skew);
    }
    const int64_t channels = int64_t(double(mc.effective_head_dim()) * args->ratio);

    const json options = {{"ratio", args->ratio},
                          {"partial_channels", channels},
                          {"full_front_layers", args->full_front_layers},
                          {"full_last_layer", args->full_last_layer},
                          {"lookahead", args->lookahead},
                          {"skew", !args->no_skew},
                          {"partial_channels_from", args->warmup_channels ? "warmup" : "prefill"},
                          {"sink_tokens", args->sink_tokens},
                          {"loss_tokens", args->loss_tokens},
                          {"greedy_tokens", args->greedy_tokens},
                          {"warmup_tokens", warmup_used},
                          {"warmup", args->warmup.empty() ? "first context" : args->warmup},
                          {"methods", args->methods},
                          {"budgets", budgets},
                          {"alphas", alphas},
                          {"max_context_tokens", args->max_context_tokens},
                          {"contexts_file", args->contexts}};

    // Resume: contexts already in OUTPUT.partial with the same options.
    const std::string partial_path = args->output + ".partial";
    json done = json::array();
    if (std::filesystem::exists(partial_path)) {
      try {
        json p = json::parse(read_file(partial_path));
        if (p.at("options") == options) done = p.at("contexts");
        else std::fprintf(stderr, "%s: other options, starting again\n", partial_path.c_str());
        // Every field the summary below reads, with its type (a missing one
        // would otherwise be read through a const json's operator[]: a JSON
        // library error naming neither the file nor the field).
        if (!done.is_array() || done.size() > contexts.size())
          throw Error(fmt::format("{}: contexts: expected an array of at most {} contexts; delete it to start again",
                                  partial_path, contexts.size()));
        for (size_t ci = 0; ci < done.size(); ++ci) {
          const json& c = done[ci];
          (void)c.at("id").get<std::string>();
          (void)c.at("tokens").get<int64_t>();
          (void)c.at("base_loss_nats").get<double>();
          (void)c.at("base_task_accuracy").get<double>();
          const json& rs = c.at("results");
          if (!rs.is_array() || rs.size() != settings.size())
            throw Error(fmt::format("{}: contexts[{}].results: expected {} settings; delete it to start again",
                                    partial_path, ci, settings.size()));
          for (const json& r : rs) {
            for (const char* key : {"fraction_fetched_per_layer", "recall_per_layer"})
              (void)r.at(key).get<std::vector<double>>();
            (void)r.at("fraction_fetched_by_step").get<std::vector<std::vector<double>>>();
            for (const char* key : {"fraction_fetched", "recall", "attention_mass", "kl_divergence", "loss_increase",
                                    "greedy_agreement", "task_accuracy", "steps"})
              (void)r.at(key).get<double>();
          }
        }
      } catch (const json::exception& e) {
        throw Error(fmt::format("{}: unreadable resume file ({}); delete it to start again", partial_path, e.what()));
      }
    }
    if (const auto parent = std::filesystem::path(args->output).parent_path(); !parent.empty())
      std::filesystem::create_directories(parent);

    Progress progress("selective-profile", contexts.size() * settings.size(), "runs", done.size() * settings.size());
    for (size_t ci = done.size(); ci < contexts.size(); ++ci) {
      const llm::ProfileContext& pc = contexts[ci];
      std::vector<int64_t> ids = tokenizer->encode(pc.context, true);
      if (args->max_context_tokens && ids.size() > args->max_context_tokens) ids.resize(args->max_context_tokens);
      if (ids.size() < 2) throw Error(fmt::format("{}: context {} has fewer than 2 tokens", args->contexts, pc.id));
      llm::SelectiveContext sc;
      sc.id = pc.id;
      sc.context.assign(ids.begin(), ids.end() - 1);
      sc.continuation = {ids.back()};
      for (int64_t t : tokenizer->encode(pc.continuation, false)) {
        if (int64_t(sc.continuation.size()) > args->loss_tokens) break;
        sc.continuation.push_back(t);
      }
      if (sc.continuation.size() < 2)
        throw Error(fmt::format("{}: context {}: empty continuation", args->contexts, pc.id));
      if (!pc.question.empty()) {
        sc.question = {ids.back()};
        for (int64_t t : tokenizer->encode(pc.question, false)) sc.question.push_back(t);
        sc.answer = tokenizer->encode(pc.answer, false);
      }
      sc.greedy_tokens = args->greedy_tokens;
      const llm::SelectiveReference ref = llm::make_selective_reference(model, sc);

      json cj = {{"id", pc.id},
                 {"tokens", int64_t(sc.context.size())},
                 {"base_loss_nats", ref.nll_nats},
                 {"base_task_accuracy", ref.task_accuracy}};
      json results = json::array();
      // One prefill per method; each setting decodes from a copy of it.
      std::optional<llm::SelectiveDecoder> prefilled;
      llm::KVCache cache;
      for (const auto& s : settings) {
        if (!prefilled || prefilled->config().method != s.method) {
          prefilled.emplace(model, s, &calibration);
          cache = prefilled->prefill(sc.context).cache;
        }
        const llm::SelectiveResult r =
            llm::evaluate_selective(model, sc, prefilled->with_config(s), cache, &ref);
        results.push_back(result_json(r));
        progress.advance(1, pc.id);
      }
      cj["results"] = results;
      done.push_back(cj);
      write_file_atomic(partial_path, json{{"options", options}, {"contexts", done}}.dump());
    }
    progress.finish();

    // Means over contexts per setting.
    const double elem = args->kv_dtype == "fp32" ? 4 : 2;
    // Each layer's sliding window (0: full attention), so that readers turn
    // fractions into bytes with the keys the layer reads (docs/selective-format.md).
    std::vector<int64_t> layer_windows;
    for (int64_t l = 0; l < mc.num_hidden_layers; ++l) layer_windows.push_back(mc.layer_window(l));
    json out = {{"format", "kvstream-selective"},
                {"version", 1},
                {"model",
                 {{"name", std::filesystem::path(args->model_dir).lexically_normal().filename().string()},
                  {"layers", mc.num_hidden_layers},
                  {"kv_heads", mc.num_key_value_heads},
                  {"head_dim", mc.effective_head_dim()},
                  {"num_attention_heads", mc.num_attention_heads},
                  {"kv_bytes_per_token", 2.0 * double(mc.num_key_value_heads * mc.effective_head_dim()) * elem},
                  {"layer_windows", layer_windows}}},
                {"kv_dtype", args->kv_dtype},
                {"options", options},
                {"contexts", json::array()},
                {"settings", json::array()}};
    for (const auto& c : done)
      out["contexts"].push_back({{"id", c["id"]},
                                 {"tokens", c["tokens"]},
                                 {"base_loss_nats", c["base_loss_nats"]},
                                 {"base_task_accuracy", c["base_task_accuracy"]}});
    std::printf("%s: %zu contexts, model %s (%lld layers); InfiniGen ratio %.2f, layers 0..%lld full%s\n",
                args->output.c_str(), done.size(), args->model_dir.c_str(), (long long)mc.num_hidden_layers,
                args->ratio, (long long)args->full_front_layers - 1, args->full_last_layer ? " and the last" : "");
    std::printf("%-10s %6s %5s %8s %-24s %7s %7s %9s %9s %7s %6s\n", "method", "budget", "alpha", "fetched",
                "fetched per layer", "recall", "mass", "KL nats", "loss inc", "agree", "task");
    for (size_t si = 0; si < settings.size(); ++si) {
      const auto& s = settings[si];
      json sj = {{"method", llm::method_name(s.method)}};
      if (s.method != llm::SelectMethod::kFull) sj["budget"] = s.budget;
      if (s.method == llm::SelectMethod::kInfiniGen) {
        sj["alpha"] = s.alpha;
        sj["partial_key_fraction"] = double(channels) / (2.0 * double(mc.effective_head_dim()));
      }
      std::vector<std::vector<double>> per_layer, recall_layer;
      std::vector<std::vector<std::vector<double>>> by_step;
      double fetched = 0, recall = 0, mass = 0, kl = 0, loss = 0, agree = 0, task = 0, steps = 0;
      int tasks = 0;
      json per_context = json::array();
      for (const auto& c : done) {
        const json& r = c["results"][si];
        per_layer.push_back(r["fraction_fetched_per_layer"].get<std::vector<double>>());
        recall_layer.push_back(r["recall_per_layer"].get<std::vector<double>>());
        by_step.push_back(r["fraction_fetched_by_step"].get<std::vector<std::vector<double>>>());
        fetched += r["fraction_fetched"].get<double>();
        recall += r["recall"].get<double>();
        mass += r["attention_mass"].get<double>();
        kl += r["kl_divergence"].get<double>();
        loss += r["loss_increase"].get<double>();
        agree += r["greedy_agreement"].get<double>();
        steps += r["steps"].get<double>();
        if (r["task_accuracy"].get<double>() >= 0) task += r["task_accuracy"].get<double>(), ++tasks;
        per_context.push_back({{"id", c["id"]},
                               {"fraction_fetched_per_layer", r["fraction_fetched_per_layer"]},
                               {"recall", r["recall"]},
                               {"attention_mass", r["attention_mass"]},
                               {"kl_divergence", r["kl_divergence"]},
                               {"loss_increase", r["loss_increase"]},
                               {"greedy_agreement", r["greedy_agreement"]},
                               {"task_accuracy", r["task_accuracy"]}});
      }
      const double n = double(std::max<size_t>(1, done.size()));
      std::vector<std::vector<double>> step_rows;
      const size_t n_steps = by_step.empty() ? 0 : by_step[0].size();
      for (size_t st = 0; st < n_steps; ++st) {
        std::vector<std::vector<double>> rows;
        for (const auto& b : by_step)
          if (st < b.size()) rows.push_back(b[st]);
        step_rows.push_back(mean_vectors(rows));
      }
      const auto fpl = mean_vectors(per_layer);
      sj["fraction_fetched"] = fetched / n;
      sj["fraction_fetched_per_layer"] = fpl;
      sj["fraction_fetched_by_step"] = step_rows;
      sj["recall"] = recall / n;
      sj["recall_per_layer"] = mean_vectors(recall_layer);
      sj["attention_mass"] = mass / n;
      sj["kl_divergence"] = kl / n;
      sj["loss_increase"] = loss / n;
      sj["greedy_agreement"] = agree / n;
      sj["task_accuracy"] = tasks ? task / tasks : -1.0;
      sj["steps"] = steps / n;
      sj["per_context"] = per_context;
      std::string layers;
      for (double f : fpl) layers += fmt::format("{}{:.3f}", layers.empty() ? "" : " ", f);
      std::printf("%-10s %6s %5s %8.3f %-24s %7.3f %7.3f %9.4f %8.2f%% %7.3f %6s\n", llm::method_name(s.method).c_str(),
                  s.method == llm::SelectMethod::kFull ? "-" : fmt::format("{:.2f}", s.budget).c_str(),
                  s.method == llm::SelectMethod::kInfiniGen ? fmt::format("{:g}", s.alpha).c_str() : "-", fetched / n,
                  layers.c_str(), recall / n, mass / n, kl / n, 100 * loss / n, agree / n,
                  tasks ? fmt::format("{:.2f}", task / tasks).c_str() : "-");
      out["settings"].push_back(sj);
    }
    write_file_atomic(args->output, out.dump(1));
    std::filesystem::remove(partial_path);
    std::printf("%.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  });
}

}  // namespace kvs::apps
