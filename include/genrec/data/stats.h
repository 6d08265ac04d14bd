// Summary statistics of a dataset, as printed by `genrec data stats`.
#pragma once

#include <nlohmann/json.hpp>

#include "genrec/data/dataset.h"

namespace genrec {

// {"users", "items", "interactions", "density", "sequence_length": {min, median, p90, max, mean},
//  "has": {timestamps, ratings, actions}, "ratings": {...}, "time_range": {...},
//  "side_information": {"attributes": {...} | null, "text": {...} | null}, "items_without_events"}
nlohmann::json dataset_stats(const Dataset& ds);

}  // namespace genrec
