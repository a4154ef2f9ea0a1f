#include "sim/engine.h"

#include <fmt/format.h>

#include "ns3/core-module.h"
#include "ns3/internet-module.h"
#include "ns3/network-module.h"

#include "base/error.h"
#include "base/progress.h"
#include "sim/cross_traffic.h"
#include "sim/fluid_network.h"
#include "sim/ns3_fixes.h"
#include "sim/ns3_version.h"
#include "sim/streaming_app.h"
#include "sim/topology.h"

namespace kvs::sim {

namespace {
constexpr uint16_t kServerPort = 7000;

// The link as an oracle sees it. The payload share counts what every data
// packet carries besides payload: IP, TCP and timestamp headers (52 bytes)
// and, on a rate-driven point-to-point bottleneck, PPP framing (2 bytes);
// a mahimahi opportunity carries one IP packet of up to its packet size.
policies::NetworkFuture network_future(const EngineConfig& c) {
  policies::NetworkFuture f;
  const LinkSpec& l = c.link;
  f.trace = l.trace ? &*l.trace : nullptr;
  f.rate_bps = l.rate_mbps * 1e6;
  f.rtt_s = (l.rtt_ms + l.access_rtt_ms) / 1000.0;
  const double mss = l.mss_bytes ? l.mss_bytes : l.mtu_bytes - 52.0;
  const bool mahimahi = l.trace && l.trace->opportunities && l.trace_mode != "rate";
  f.payload_share = c.network == "pensieve" ? 0.95 : mahimahi ? mss / (mss + 52.0) : mss / (mss + 54.0);
  f.in_flight = c.in_flight;
  f.handshake = c.network != "pensieve";  // Pensieve's chunk-level model starts sending at once
  return f;
}
}  // namespace

EngineOutput run_engine(const EngineConfig& config, const std::vector<ContextSpec>& contexts,
                        const PolicyFactory& make_policy) {
  const size_t total = config.arrival_s.size();
  if (config.contexts.size() != total) throw Error("engine: one context per request expected");
  check_network_model(config.network);
  const bool packets = config.network == "ns3";
  // The fixes below need ns-3.37 (sim/ns3_version.h); checked first, as its
  // error names the versions found and expected.
  if (packets) require_ns3_version(config.link.ns3_stock);
  // The guard against ns-3.37's zero-length segments must be the function
  // ns-3 calls (sim/ns3_fixes.h); this reference also links it in.
  if (packets && !ns3_fixes_active())
    throw Error("ns-3: the project's TcpTxBuffer::CopyFromSequence is not the one libns3-internet calls");
  // Policies first, so that a bad name or parameter fails before ns-3 starts.
  std::vector<std::unique_ptr<policies::Policy>> policies;
  for (uint32_t i = 0; i < total; ++i) policies.push_back(make_policy(i));

  EngineOutput out;
  out.requests.resize(total);
  out.network_model = config.network;

  // ns-3's default event queue is a std::map; PriorityQueueScheduler (a
  // binary heap) runs the same events in the same order (ties go by
  // insertion) in about 5 % less time (BENCHMARKS.md). This overrides ns-3's
  // SchedulerType global value.
  ns3::Simulator::SetScheduler(ns3::ObjectFactory("ns3::PriorityQueueScheduler"));
  ns3::RngSeedManager::SetSeed(config.seed);
  ns3::RngSeedManager::SetRun(config.run);
  EventLog log;
  GpuQueue gpu;
  size_t done = 0;
  ErrorSlot errors;
  std::unique_ptr<Progress> progress;
  if (config.show_progress) {
    uint64_t chunks = 0;
    for (uint32_t c : config.contexts) chunks += c < contexts.size() ? contexts[c].chunks.size() : 0;
    progress = std::make_unique<Progress>("simulate", chunks, "chunks");
  }
  // The models' link outlives the simulator's objects (Simulator::Destroy
  // below disposes of the clients and their transports).
  traces::Trace looped;
  FluidParams fluid;
  std::unique_ptr<FluidLink> fluid_link;
  try {
    // Each request's connection: ns-3 TCP across the dumbbell, or a model.
    ns3::Ptr<ns3::Node> client_node;
    std::function<std::unique_ptr<ChunkTransport>(uint32_t request, uint32_t context)> connect;
    if (packets) {
      Topology topo = build_topology(config.link, cross_traffic_pairs(config.cross));
      out.network = topo.description;
      out.network_settings = topo.settings;
      out.network_settings.insert(out.network_settings.begin(), {"network.model", "ns3"});
      if (config.link.trace) schedule_trace(topo, *config.link.trace, config.max_sim_s);
      install_cross_traffic(config.cross, topo, config.max_sim_s);

      auto server = ns3::CreateObject<ChunkServer>(kServerPort, &contexts, config.request_header_bytes,
                                                   config.response_header_bytes, &errors);
      topo.server->AddApplication(server);
      server->SetStartTime(ns3::Seconds(0));
      client_node = topo.client;
      const ns3::Address server_address = ns3::InetSocketAddress(topo.server_address, kServerPort);
      connect = [&config, &errors, client_node, server_address](uint32_t request, uint32_t context) {
        return std::make_unique<TcpChunkTransport>(client_node, server_address, request, context,
                                                   config.request_header_bytes, config.response_header_bytes,
                                                   &errors);
      };
    } else {
      fluid = fluid_params(config, &looped);
      fluid_link = std::make_unique<FluidLink>(fluid);
      out.network = fluid_description(fluid, config);
      out.network_settings = fluid_settings(fluid, config);
      client_node = ns3::CreateObject<ns3::Node>();  // holds the clients; no stack, no packets
      connect = [&fluid, &fluid_link, &errors](uint32_t, uint32_t) {
        return std::make_unique<FluidTransport>(fluid_link.get(), fluid, &errors);
      };
    }

    for (uint32_t i = 0; i < total; ++i) {
      const uint32_t ctx = config.contexts[i];
      if (ctx >= contexts.size()) throw Error(fmt::format("engine: request {} names context {}", i, ctx));
      RequestResult& rr = out.requests[i];
      rr.id = i;
      rr.context = ctx;
      rr.context_id = contexts[ctx].id;
      rr.tokens = contexts[ctx].tokens;
      ClientSetup s;
      s.request_id = i;
      s.context = ctx;
      s.transport = connect(i, ctx);
      s.network_model = config.network;
      s.spec = &contexts[ctx];
      s.policy = std::move(policies[i]);
      s.gpu = &gpu;
      s.log = &log;
      s.result = &rr;
      s.slo_s = config.slo_s;
      s.in_flight = config.in_flight;
      s.sample_interval_s = config.sample_interval_s;
      s.request_bytes = config.request_header_bytes;
      s.response_header_bytes = config.response_header_bytes;
      s.errors = &errors;
      s.give_future = config.policy_reads_future;
      s.future = network_future(config);
      if (progress) s.on_chunk = [&progress] { progress->advance(); };
      s.on_done = [&done, total] {
        if (++done == total) ns3::Simulator::Stop();
      };
      auto client = ns3::CreateObject<ChunkClient>(std::move(s));
      client_node->AddApplication(client);
      client->SetStartTime(ns3::Seconds(config.arrival_s[i]));
    }

    ns3::Simulator::Stop(ns3::Seconds(config.max_sim_s));
    ns3::Simulator::Run();
  } catch (...) {
    ns3::Simulator::Destroy();
    throw;
  }
  if (progress) progress->finish();
  if (errors.error) {
    ns3::Simulator::Destroy();
    std::rethrow_exception(errors.error);
  }
  out.sim_end_s = ns3::Simulator::Now().GetSeconds();
  out.events = ns3::Simulator::GetEventCount();
  ns3::Simulator::Destroy();
  out.events_jsonl = log.lines();
  return out;
}

}  // namespace kvs::sim
