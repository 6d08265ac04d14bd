// The learning-rate schedule of the retrieval models' training loops (models/sequential.cpp,
// models/tiger.cpp): `train.warmup_steps`, `train.lr_schedule`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace genrec {

// The learning rate of optimizer step `step` (1-based) out of `total_steps`: a linear warm-up
// from lr/warmup_steps to lr over the first `warmup_steps` steps, then `schedule` "constant"
// (lr) or "cosine" (half a cosine from lr down to 0 at step `total_steps`).
inline double scheduled_lr(double lr, int64_t warmup_steps, const std::string& schedule, int64_t step,
                           int64_t total_steps) {
  if (warmup_steps > 0 && step <= warmup_steps) return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (schedule != "cosine") return lr;
  return 0.5 * lr *
         (1 + std::cos(M_PI * static_cast<double>(step - warmup_steps) /
                       static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps))));
}

}  // namespace genrec
