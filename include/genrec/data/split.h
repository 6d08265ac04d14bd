// Train / validation / test splits over a Dataset's per-user sequences.
//
// Every evaluation target is one event of a user; its history is every earlier event of that
// user. Training uses each user's first train_end events.
//  leave_one_out: users with >= 3 events: last = test, second-to-last = valid, rest = train;
//                 users with fewer events train only (SASRec / TIGER protocol).
//  temporal:      two global timestamp cuts at the (1 - valid_fraction - test_fraction) and
//                 (1 - test_fraction) quantiles of all event times. Training events are before
//                 the first cut; a user's first event in [cut1, cut2) is its valid target and
//                 its first event at or after cut2 its test target (each only with a non-empty
//                 history).
//  train_on_valid: the fit before serving, once settings are chosen on validation: the
//                 validation events become training events (leave-one-out: all but the last;
//                 temporal: everything before the second cut) and there are no validation
//                 targets. Test targets are the same and still never trained on.
//
// Example:
//   Split split = make_split(ds, SplitOptions{});           // leave-one-out
//   for (int32_t u = 1; u <= ds.n_users(); ++u) if (split.test_index[u] >= 0) ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "genrec/data/dataset.h"

namespace genrec {

struct SplitOptions {
  std::string kind = "leave_one_out";  // leave_one_out | temporal
  double valid_fraction = 0.1;         // temporal only: share of events (by time) after cut 1
  double test_fraction = 0.1;          // temporal only: share of events after cut 2
  // The final fit before serving: the validation events become training events and the split
  // has no validation targets (no model selection: training keeps its last weights). Test
  // targets are unchanged and still never trained on.
  bool train_on_valid = false;
};

enum class SplitPart { Valid, Test };
SplitPart parse_split_part(const std::string& name);  // "valid" | "test"
const char* split_part_name(SplitPart part);

struct Split {
  std::string kind;
  std::vector<int64_t> train_end;    // [n_users + 1] events [0, train_end) train
  std::vector<int64_t> valid_index;  // [n_users + 1] index of the valid target, -1 for none
  std::vector<int64_t> test_index;   // [n_users + 1] index of the test target, -1 for none
  int64_t valid_cut = 0, test_cut = 0;  // temporal: the timestamp cuts
  bool train_on_valid = false;          // SplitOptions::train_on_valid: no validation targets

  const std::vector<int64_t>& targets(SplitPart part) const {
    return part == SplitPart::Valid ? valid_index : test_index;
  }
  std::vector<int64_t>& targets(SplitPart part) { return part == SplitPart::Valid ? valid_index : test_index; }
  int64_t n_targets(SplitPart part) const;
  int64_t n_train_events() const;
  // Temporal: the time before which events are trained on (the test cut with train_on_valid).
  int64_t train_cut() const { return train_on_valid ? test_cut : valid_cut; }
  // One-line human description, used in metrics' "protocol".
  std::string describe() const;
};

Split make_split(const Dataset& ds, const SplitOptions& options);

// Number of training events of each item (index = dense item id, 0 = padding): what popularity
// means for models and for popularity-sampled negatives. Size n_items + 1.
std::vector<double> train_item_counts(const Dataset& ds, const Split& split);

}  // namespace genrec
