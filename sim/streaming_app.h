// The two ends of KV-cache streaming in ns-3 (C++17; internal to sim/):
//
// ChunkServer answers requests on persistent TCP connections. A request is 16
// bytes (little-endian u32 tag, context, chunk, level); the answer is a
// 16-byte header (u32 tag, u32 chunk, u64 payload bytes) followed by the
// chunk's bytes at that level, sizes taken from the profile (scaled to the
// target model). Payload bytes are ns-3 virtual bytes: no memory, no copies.
//
// ChunkClient is one request of the GPU node for one context. In the usual
// schedule (Schedule::kInOrder) it asks the policy for every chunk in order,
// fetches the chunks it chose to fetch (with at most `in_flight` requests
// outstanding on one connection), sends the others to the GPU for recompute,
// measures throughput as a real client could, and feeds decode / recompute /
// first-token work to the shared GPU queue in chunk order. In the Cake-style
// schedule (Schedule::kLoadBackComputeFront) it fetches chunks from the last
// backward (the policy picks their levels) while the GPU recomputes chunks
// from the first forward, one at a time; each side claims a chunk before
// working on it and stops at the first chunk the other has claimed, so the
// meeting point follows from measured progress. Fetched chunks are decoded
// as they arrive (their KV does not depend on earlier chunks).
#pragma once

#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ns3/address.h"
#include "ns3/application.h"
#include "ns3/event-id.h"
#include "ns3/ptr.h"
#include "ns3/socket.h"

#include "policies/policy.h"
#include "sim/engine.h"
#include "sim/run_log.h"

namespace kvs::sim {

// Exceptions must not cross ns-3's event loop (the event being run would
// leak): callbacks store the first one here and stop the simulator; the
// engine rethrows it after Simulator::Run().
struct ErrorSlot {
  std::exception_ptr error;
  template <class F>
  void guard(F&& f) {
    try {
      f();
    } catch (...) {
      if (!error) error = std::current_exception();
      StopSimulator();
    }
  }
  static void StopSimulator();
};

inline constexpr uint32_t kRequestBytes = 16;
inline constexpr uint32_t kResponseHeaderBytes = 16;

class ChunkServer : public ns3::Application {
 public:
  ChunkServer(uint16_t port, const std::vector<ContextSpec>* contexts, uint32_t request_bytes,
              uint32_t response_header_bytes, ErrorSlot* errors);

 private:
  struct Response {
    std::string header;
    size_t header_sent = 0;
    uint64_t payload_left = 0;
  };
  struct Connection {
    std::string rx;
    std::deque<Response> queue;
  };

  void StartApplication() override;
  void StopApplication() override;
  void HandleAccept(ns3::Ptr<ns3::Socket> socket, const ns3::Address& from);
  void HandleRead(ns3::Ptr<ns3::Socket> socket);
  void Read(ns3::Ptr<ns3::Socket> socket);
  void Pump(ns3::Ptr<ns3::Socket> socket, uint32_t available);

  uint16_t port_;
  const std::vector<ContextSpec>* contexts_;
  uint32_t request_bytes_, response_header_bytes_;
  ErrorSlot* errors_;
  ns3::Ptr<ns3::Socket> listener_;
  std::map<ns3::Ptr<ns3::Socket>, Connection> connections_;
};

struct ClientSetup {
  uint32_t request_id = 0;
  uint32_t context = 0;
  ns3::Address server;
  const ContextSpec* spec = nullptr;
  std::unique_ptr<policies::Policy> policy;
  GpuQueue* gpu = nullptr;
  EventLog* log = nullptr;
  RequestResult* result = nullptr;
  double slo_s = 0;
  uint32_t in_flight = 1;
  double sample_interval_s = 0.01;
  uint32_t request_bytes = kRequestBytes;
  uint32_t response_header_bytes = kResponseHeaderBytes;
  ErrorSlot* errors = nullptr;
  // For a policy that reads the future (an oracle): handed over before the first decision.
  bool give_future = false;
  policies::NetworkFuture future;
  std::function<void()> on_chunk;  // a chunk arrived or was sent to recompute
  std::function<void()> on_done;   // after the first token
};

class ChunkClient : public ns3::Application {
 public:
  explicit ChunkClient(ClientSetup setup);

 private:
  struct Chunk {
    bool decided = false, fetch = false, ready = false;
  };

  void StartApplication() override;
  void Start();
  void StopApplication() override;
  void HandleConnected(ns3::Ptr<ns3::Socket> socket);
  void HandleRead(ns3::Ptr<ns3::Socket> socket);
  void Read(ns3::Ptr<ns3::Socket> socket);
  void DecideMore();
  void SendRequest(uint32_t chunk, int level);
  void HandleSendSpace(ns3::Ptr<ns3::Socket> socket, uint32_t available);
  void Flush();
  void OnBytes(uint64_t bytes, double now_s);
  void ChunkArrived(uint32_t chunk, double now_s);
  void SubmitReadyWork();
  void SubmitGpu(uint32_t chunk, double now_s);
  void SubmitFirstToken(double now_s);
  void Decide(uint32_t chunk, double now_s);
  // Cake-style schedule.
  void DecideBackward(double now_s);
  void AdvanceFront();
  void FrontDone();
  void MaybeFinishHybrid(double now_s);
  void Finish(double first_token_start_s, double first_token_end_s);
  policies::StreamState MakeState(double now_s, uint32_t chunk) const;

  ClientSetup s_;
  uint32_t total_chunks_ = 0;
  std::vector<Chunk> chunks_;
  bool hybrid_ = false;
  uint32_t next_decide_ = 0, next_gpu_ = 0, outstanding_ = 0;
  // Cake-style schedule: chunks [0, front_) are claimed for recompute,
  // [back_, total) for fetching; front_ <= back_.
  uint32_t front_ = 0, back_ = 0, gpu_submitted_ = 0;
  bool front_busy_ = false, fetch_stopped_ = false, first_token_submitted_ = false;
  std::vector<policies::Decision> decisions_;
  ns3::Ptr<ns3::Socket> socket_;
  bool connected_ = false, socket_open_ = false;
  double start_s_ = 0, rtt_s_ = 0;
  std::string outbox_;
  std::deque<uint32_t> pending_;     // fetched chunks requested, in order
  // Response parsing.
  uint8_t header_[kResponseHeaderBytes] = {};
  uint32_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  bool in_payload_ = false;
  // Throughput measurement.
  std::vector<policies::ThroughputSample> samples_, chunk_samples_;
  bool interval_open_ = false;
  double interval_start_s_ = 0;
  uint64_t interval_bytes_ = 0;
  double first_token_slot_start_s_ = 0;
};

}  // namespace kvs::sim
