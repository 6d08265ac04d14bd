// Terminal drawing of library progress events for the CLI.
#pragma once

#include "genrec/core/progress.h"

namespace genrec::cli {

// A callback that draws a bar on stderr when it is a terminal and otherwise prints one line
// per stage when it finishes (and every 10 s while it runs). quiet = draw nothing.
ProgressCallback make_progress_bar(bool quiet);

}  // namespace genrec::cli
