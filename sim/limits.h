// Ranges of the numeric settings of a run that a real run can have (issue 25:
// a 4 GB request header, 5,000 cross-traffic flows or a 10^9 Mbit/s UDP source
// made the simulator crash, hang or run for minutes). The scenario parser
// checks them with the file and line (scenarios/scenario.cpp), the simulator
// again without (sim/simulation.cc validate(), for settings from the command
// line). Plain constants: no ns-3, included from C++17 and C++20.
#pragma once

#include <cstdint>

namespace kvs::sim::limits {

inline constexpr double kMaxRateMbps = 1e6;            // 1 Tbit/s: bottleneck, access links, UDP sources
inline constexpr double kMaxRttMs = 60'000;            // a minute of propagation delay
inline constexpr uint32_t kMaxQueuePackets = 1'000'000;
inline constexpr uint32_t kMaxTcpBufferBytes = 1u << 30;  // 1 GiB socket buffers
inline constexpr uint32_t kMaxInitialCwndSegments = 10'000;
inline constexpr uint32_t kMaxDelayedAckCount = 64;
inline constexpr double kMaxMinRtoMs = 60'000;
inline constexpr uint32_t kMaxHeaderBytes = 1u << 20;  // request and response headers: 1 MiB
inline constexpr uint32_t kMaxInFlight = 1024;         // chunk requests outstanding per connection
inline constexpr uint32_t kMaxRequests = 100'000;      // arrivals (count or times) per run
inline constexpr double kMaxArrivalRatePerS = 1e6;
inline constexpr uint32_t kMaxCrossFlows = 100;        // bulk TCP flows, and on/off UDP sources
inline constexpr double kMinUdpPeriodS = 1e-3;         // mean on and off periods of a UDP source
inline constexpr double kMaxSimS = 86'400;             // a day of simulated time
inline constexpr double kMaxSampleIntervalMs = 60'000;
inline constexpr double kMaxTraceScale = 1e6;
inline constexpr double kMaxPeakFlops = 1e18;          // an exaFLOP/s GPU
inline constexpr double kMaxBytesPerS = 1e15;          // memory or decode bandwidth: 1 PB/s
inline constexpr double kMaxDecodeSpeedup = 1e6;
inline constexpr double kMaxFirstTokenS = 3600;

}  // namespace kvs::sim::limits
