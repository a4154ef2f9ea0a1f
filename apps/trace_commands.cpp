#include "apps/commands.h"

namespace kvs::apps {

void add_trace_commands(CLI::App& app) { (void)app; }

}  // namespace kvs::apps
