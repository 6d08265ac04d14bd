#include "genrec/data/split.h"

#include <algorithm>
#include <cmath>

#include "genrec/core/error.h"

namespace genrec {

SplitPart parse_split_part(const std::string& name) {
  if (name == "valid") return SplitPart::Valid;
  if (name == "test") return SplitPart::Test;
  throw InvalidInput("split: '" + name + "' is not one of valid, test");
}

const char* split_part_name(SplitPart part) { return part == SplitPart::Valid ? "valid" : "test"; }

int64_t Split::n_targets(SplitPart part) const {
  const auto& t = targets(part);
  return std::count_if(t.begin(), t.end(), [](int64_t i) { return i >= 0; });
}

int64_t Split::n_train_events() const {
  int64_t n = 0;
  for (auto e : train_end) n += e;
  return n;
}

std::string Split::describe() const {
  std::string d = kind == "temporal"
                      ? "temporal (cuts at t=" + std::to_string(valid_cut) + " and t=" + std::to_string(test_cut) + ")"
                      : "leave-one-out";
  if (train_on_valid) d += ", validation events trained on";
  return d;
}

std::vector<double> train_item_counts(const Dataset& ds, const Split& split) {
  std::vector<double> counts(static_cast<size_t>(ds.n_items()) + 1, 0.0);
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    UserEvents ev = ds.user(u);
    for (int64_t k = 0; k < split.train_end[static_cast<size_t>(u)]; ++k) counts[static_cast<size_t>(ev.items[k])] += 1;
  }
  return counts;
}

Split make_split(const Dataset& ds, const SplitOptions& options) {
  Split s;
  s.kind = options.kind;
  s.train_on_valid = options.train_on_valid;
  const auto n = static_cast<size_t>(ds.n_users()) + 1;
  s.train_end.assign(n, 0);
  s.valid_index.assign(n, -1);
  s.test_index.assign(n, -1);
  if (options.kind == "leave_one_out") {
    for (int32_t u = 1; u <= ds.n_users(); ++u) {
      int64_t len = ds.user(u).size;
      auto uu = static_cast<size_t>(u);
      if (len >= 3) {
        s.train_end[uu] = options.train_on_valid ? len - 1 : len - 2;
        s.valid_index[uu] = options.train_on_valid ? -1 : len - 2;
        s.test_index[uu] = len - 1;
      } else {
        s.train_end[uu] = len;
      }
    }
    return s;
  }
  if (options.kind != "temporal")
    throw InvalidInput("split: unknown kind '" + options.kind + "' (expected leave_one_out or temporal)");
  if (!ds.has_timestamps()) throw InvalidInput("split: temporal split needs timestamps, and this dataset has none");
  if (!(options.valid_fraction >= 0 && options.test_fraction > 0 && options.valid_fraction + options.test_fraction < 1))
    throw InvalidInput("split: need 0 <= valid_fraction, 0 < test_fraction, valid_fraction + test_fraction < 1");
  std::vector<int64_t> ts = ds.event_timestamps;
  std::sort(ts.begin(), ts.end());
  auto quantile = [&](double q) {
    auto idx = static_cast<size_t>(std::floor(q * static_cast<double>(ts.size())));
    return ts[std::min(idx, ts.size() - 1)];
  };
  s.valid_cut = quantile(1.0 - options.valid_fraction - options.test_fraction);
  s.test_cut = quantile(1.0 - options.test_fraction);
  for (int32_t u = 1; u <= ds.n_users(); ++u) {
    UserEvents ev = ds.user(u);
    auto uu = static_cast<size_t>(u);
    int64_t k = 0;
    while (k < ev.size && ev.timestamps[k] < s.valid_cut) ++k;
    s.train_end[uu] = k;
    if (k < ev.size && ev.timestamps[k] < s.test_cut && k >= 1 && !options.train_on_valid) s.valid_index[uu] = k;
    while (k < ev.size && ev.timestamps[k] < s.test_cut) ++k;
    if (options.train_on_valid) s.train_end[uu] = k;
    if (k < ev.size && k >= 1) s.test_index[uu] = k;
  }
  return s;
}

}  // namespace genrec
