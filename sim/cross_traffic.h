// Background traffic on the bottleneck (C++17; internal to sim/): long-lived
// bulk TCP flows and on/off UDP sources with exponential on and off periods
// (ns-3 random streams, so seeded by the run's seed and run number).
#pragma once

#include "sim/specs.h"
#include "sim/topology.h"

namespace kvs::sim {

// Number of sender/receiver pairs the spec needs (one per flow).
uint32_t cross_traffic_pairs(const CrossTrafficSpec& spec);

// Installs the flows on the topology's cross pairs; they run from
// `spec.start_s` to `stop_s`.
void install_cross_traffic(const CrossTrafficSpec& spec, const Topology& topo, double stop_s);

}  // namespace kvs::sim
