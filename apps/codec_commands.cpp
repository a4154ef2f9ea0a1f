#include "apps/commands.h"

namespace kvs::apps {

void add_codec_commands(CLI::App& app) { (void)app; }

}  // namespace kvs::apps
