// `genrec sid build` / `genrec sid stats` (see include/genrec/tokenizers/sid_build.h).
#include "genrec/tokenizers/sid_build.h"

#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "genrec/core/error.h"
#include "genrec/core/io.h"
#include "genrec/core/log.h"
#include "genrec/data/dataset.h"
#include "genrec/tokenizers/item_features.h"
#include "genrec/tokenizers/rq.h"
#include "genrec/tokenizers/semantic_ids.h"

namespace genrec {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Peak resident set size (VmHWM) in MiB, or -1 when /proc is not there.
double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      double kb = -1;
      ss >> kb;
      return kb >= 0 ? kb / 1024.0 : -1.0;
    }
  }
  return -1.0;
}

std::filesystem::path strip_trailing_separator(std::filesystem::path p) {
  std::string s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

Dataset load_for_sid(const std::filesystem::path& data) {
  try {
    return load_dataset(data, LoadOptions{true, true});
  } catch (...) {
    rethrow_with_stage("loading dataset " + data.string());
  }
}

}  // namespace

nlohmann::json sid_build_run(const SidBuildRequest& req, const ProgressCallback& progress) {
  const auto t_total = Clock::now();
  if (req.data.empty()) throw InvalidInput("sid build: give the dataset directory (--data)");
  const std::filesystem::path out = strip_trailing_separator(req.out);
  if (out.empty()) throw InvalidInput("sid build: give the output directory (--out)");

  RQOptions rq;
  rq.method = req.method;
  rq.levels = req.levels;
  rq.codebook_size = req.codebook_size;
  rq.balanced = req.balanced;
  rq.seed = req.seed;
  if (req.kmeans_iters) rq.kmeans_iters = *req.kmeans_iters;
  if (req.epochs) rq.epochs = *req.epochs;
  if (req.latent_dim) rq.latent_dim = *req.latent_dim;
  rq.threads = req.threads;
  ItemFeatureOptions fopt;
  if (!req.import_codes) {
    rq.validate();
    for (const auto& spec : req.features) fopt.sources.push_back(parse_feature_spec(spec));
  } else if (!req.features.empty()) {
    throw InvalidInput("sid build: --import takes the codes from a file; do not give --features with it");
  }

  // Check the destination before any long work; a failure below removes the staging directory.
  StagingDir stage(out, req.overwrite);

  auto t0 = Clock::now();
  Dataset ds = load_for_sid(req.data);
  const double load_s = seconds_since(t0);
  if (ds.n_items() < 1) throw InvalidInput(req.data.string() + ": the dataset has no items");

  nlohmann::json report = {{"format", "genrec-sid-report 1"},
                           {"data", std::filesystem::absolute(req.data).lexically_normal().string()},
                           {"out", out.string()},
                           {"items", ds.n_items()}};
  SemanticIds sid;
  double features_s = 0, fit_s = 0;
  ResidualQuantizer quantizer;
  if (req.import_codes) {
    t0 = Clock::now();
    sid = import_code_map(*req.import_codes, ds.items, req.id_offset);
    fit_s = seconds_since(t0);
    report["method"] = "import";
    report["import"] = {{"path", req.import_codes->string()}, {"id_offset", req.id_offset}};
  } else {
    if (fopt.sources.empty()) {
      if (ds.n_items_with_text() > 0) fopt.sources.push_back(parse_feature_spec("text:64"));
      else if (ds.has_attributes() && !ds.attribute_values.empty()) fopt.sources.push_back(parse_feature_spec("attributes:32"));
      else
        throw InvalidInput(req.data.string() +
                           ": the dataset has no item text or attributes; give --features (e.g. matrix:FILE or run:DIR)");
    }
    if (req.threads > 0) torch::set_num_threads(static_cast<int>(req.threads));
    t0 = Clock::now();
    ItemFeatures features = build_item_features(ds, fopt, req.seed, progress);
    features_s = seconds_since(t0);
    report["features"] = features.report;
    GENREC_LOG_INFO("sid build: %d items x %lld dims; fitting %s (%lld levels x %lld codes)", ds.n_items(),
                    static_cast<long long>(features.dim), rq.method.c_str(), static_cast<long long>(rq.levels),
                    static_cast<long long>(rq.codebook_size));
    t0 = Clock::now();
    RQResult r = fit_residual_quantizer(features.x.data() + features.dim, ds.n_items(), features.dim, rq, progress);
    fit_s = seconds_since(t0);
    sid = std::move(r.sid);
    quantizer = std::move(r.quantizer);
    report["method"] = rq.method;
    report["quantizer"] = r.report;
  }

  const double before = resolve_collisions(sid);
  report["collision_rate_before_resolution"] = before;
  report["disambiguation_level"] = sid.disambiguation_level;
  report["levels"] = sid.levels;
  report["codebook_sizes"] = sid.codebook_sizes;
  report["codebook"] = codebook_report(sid);
  if (before > 0)
    GENREC_LOG_INFO("sid build: %.2f%% of items shared a code sequence; added a disambiguation level", 100.0 * before);

  t0 = Clock::now();
  nlohmann::json seconds = {{"load", load_s}, {"features", features_s}, {"fit", fit_s}};
  report["seconds"] = seconds;
  report["peak_rss_mb"] = peak_rss_mb();
  sid.report = report;
  write_semantic_ids_json(stage.path() / "codes.json", sid, ds.items);
  write_semantic_ids_bin(stage.path() / "codes.bin", sid);
  if (quantizer.fitted()) quantizer.save(stage.path() / "rq.safetensors");
  seconds["write"] = seconds_since(t0);
  seconds["total"] = seconds_since(t_total);
  report["seconds"] = seconds;
  report["peak_rss_mb"] = peak_rss_mb();
  write_file_atomic(stage.path() / "report.json", report.dump(2) + "\n");
  stage.commit();
  return report;
}

nlohmann::json sid_stats_run(const std::filesystem::path& codes, const std::filesystem::path& data) {
  Dataset ds;
  try {
    ds = load_dataset(data, LoadOptions{false, true});
  } catch (...) {
    rethrow_with_stage("loading dataset " + data.string());
  }
  SemanticIds sid = read_semantic_ids(codes, ds.items);
  if (sid.n_items != ds.n_items())
    throw InvalidInput(codes.string() + ": has " + std::to_string(sid.n_items) + " items but dataset " + data.string() +
                       " has " + std::to_string(ds.n_items()));
  nlohmann::json j = codebook_report(sid);
  j["path"] = codes.string();
  j["items"] = sid.n_items;
  j["levels"] = sid.levels;
  j["codebook_sizes"] = sid.codebook_sizes;
  j["disambiguation_level"] = sid.disambiguation_level;
  return j;
}

}  // namespace genrec
