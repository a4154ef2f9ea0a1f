// The two ends of KV-cache streaming in ns-3 (C++17; internal to sim/):
//
// ChunkServer answers requests on persistent TCP connections. A request is 16
// bytes (little-endian u32 tag, context, chunk, level); the answer is a
// 16-byte header (u32 tag, u32 chunk, u64 payload bytes) followed by the
// chunk's bytes at that level, sizes taken from the profile (scaled to the
// target model). Payload bytes are ns-3 virtual bytes: no memory, no copies.
//
// ChunkClient is one request of the GPU node for one context; its connection
// is a ChunkTransport: ns-3 TCP (TcpChunkTransport) or a model without
// packets (sim/fluid_network.h), so the same client logic runs on both. In the usual
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
// In the selective schedule (Schedule::kSelectiveLayers, policy `selective`)
// the unit is a layer: the client asks for the partial keys, then for every
// layer in order either the whole layer or, once its speculation is possible,
// the selected share of it (requests carrying a byte count, RequestPart); the
// GPU runs the prompt through each layer as its KV is in; the first token
// follows the last layer; the rest of the cache is requested after the last
// layer and arrives during decoding.
#pragma once

#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ns3/address.h"
#include "ns3/application.h"
#include "ns3/event-id.h"
#include "ns3/node.h"
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
// A request whose level carries this bit asks for a part of a chunk (or any
// byte range the client sizes itself, selective loading) and is followed by
// 8 more bytes: the payload byte count (u64, little-endian). The chunk field
// then names the part; the answer echoes it.
inline constexpr uint32_t kPartRequestFlag = 0x80000000u;
inline constexpr uint32_t kPartRequestExtraBytes = 8;

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

// How a ChunkClient's requests reach the chunk server and the answers come
// back. The transport reports to its Receiver in simulation-time order
// (TransportFirstByte may name an earlier instant than the call's).
class ChunkTransport {
 public:
  class Receiver {
   public:
    virtual ~Receiver() = default;
    virtual void TransportConnected(double rtt_s) = 0;              // the connection is up
    virtual void TransportRead(uint64_t bytes, double now_s) = 0;    // response bytes read (stream bytes)
    virtual void TransportFirstByte(uint32_t chunk, double t_s) = 0;  // the chunk's response header is in
    virtual void TransportArrived(uint32_t chunk, double now_s) = 0;  // its last byte is in, now
  };
  virtual ~ChunkTransport() = default;
  virtual void Open(Receiver* receiver) = 0;  // at the request's start
  // Asks for `chunk` at `level` (`payload_bytes` long): answered in order.
  virtual void Request(uint32_t chunk, int level, uint64_t payload_bytes) = 0;
  // Asks for `payload_bytes` that the client sized itself (selective loading:
  // a layer's selected tokens, the partial keys, the rest), named `part` in
  // the answer: the request carries the byte count (kPartRequestFlag).
  virtual void RequestPart(uint32_t part, int level, uint64_t payload_bytes) = 0;
  virtual void Close() = 0;
};

// One persistent ns-3 TCP connection to a ChunkServer: sends the 16-byte
// requests and parses the responses from the byte stream whatever its
// segmentation.
class TcpChunkTransport : public ChunkTransport {
 public:
  TcpChunkTransport(ns3::Ptr<ns3::Node> node, const ns3::Address& server, uint32_t request_id, uint32_t context,
                    uint32_t request_bytes, uint32_t response_header_bytes, ErrorSlot* errors);
  void Open(Receiver* receiver) override;
  void Request(uint32_t chunk, int level, uint64_t payload_bytes) override;
  void RequestPart(uint32_t part, int level, uint64_t payload_bytes) override;
  void Close() override;

 private:
  void HandleConnected(ns3::Ptr<ns3::Socket> socket);
  void HandleRead(ns3::Ptr<ns3::Socket> socket);
  void Read(ns3::Ptr<ns3::Socket> socket);
  void HandleSendSpace(ns3::Ptr<ns3::Socket> socket, uint32_t available);
  // The connection ended without Close(): TCP gave up (DataRetries
  // retransmissions unanswered) or was reset. The request can never finish.
  void HandleDropped(ns3::Ptr<ns3::Socket> socket);
  void Flush();

  ns3::Ptr<ns3::Node> node_;
  ns3::Address server_;
  uint32_t request_id_, context_, request_bytes_, response_header_bytes_;
  ErrorSlot* errors_;
  Receiver* receiver_ = nullptr;
  ns3::Ptr<ns3::Socket> socket_;
  bool connected_ = false, socket_open_ = false;
  double start_s_ = 0;
  std::string outbox_;
  std::deque<uint32_t> pending_;     // chunks requested, in order
  // Response parsing.
  uint8_t header_[kResponseHeaderBytes] = {};
  uint32_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  bool in_payload_ = false;
};

struct ClientSetup {
  uint32_t request_id = 0;
  uint32_t context = 0;
  std::unique_ptr<ChunkTransport> transport;
  std::string network_model = "ns3";  // named in the log's request event
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

class ChunkClient : public ns3::Application, private ChunkTransport::Receiver {
 public:
  explicit ChunkClient(ClientSetup setup);

 private:
  struct Chunk {
    bool decided = false, fetch = false, ready = false;
    // A windowed target (ContextSpec::layer_windows): the GPU decode of the
    // left-out layers of earlier chunks fetched for this chunk's recompute.
    double repair_decode_s = 0;
  };
  // Selective schedule: one layer's fetch and GPU work.
  struct Layer {
    int level = -1;            // offered level index, once requested
    uint64_t bytes = 0;        // requested before the first token
    uint64_t rest_bytes = 0;   // its remainder, requested after the last layer
    double decode_s = 0;       // GPU decode of `bytes`
    bool requested = false, arrived = false, blocked = false;
  };

  void StartApplication() override;
  void Start();
  void StopApplication() override;
  void TransportConnected(double rtt_s) override;
  void TransportRead(uint64_t bytes, double now_s) override;
  void TransportFirstByte(uint32_t chunk, double t_s) override;
  void TransportArrived(uint32_t chunk, double now_s) override;
  void DecideMore();
  void SendRequest(uint32_t chunk, int level);
  void OnBytes(uint64_t bytes, double now_s);
  void ChunkArrived(uint32_t chunk, double now_s);
  void SubmitReadyWork();
  void SubmitGpu(uint32_t chunk, double now_s);
  void SubmitFirstToken(double now_s);
  void Decide(uint32_t chunk, double now_s);
  // A windowed target: the layers of earlier chunks that recomputing `chunk`
  // reads and that were left out; FetchForRecompute asks for them (false
  // when none is missing).
  policies::RecomputeFetch MissingForRecompute(uint32_t chunk) const;
  bool FetchForRecompute(uint32_t chunk, double now_s);
  // Cake-style schedule.
  void DecideBackward(double now_s);
  void AdvanceFront();
  void FrontDone();
  void MaybeFinishHybrid(double now_s);
  void Finish(double first_token_start_s, double first_token_end_s);
  // Selective schedule.
  void StartSelective();
  void SendSelective(double now_s);
  uint64_t FirstTokenReads(uint32_t layer) const;
  void SelectiveArrived(uint32_t part, double now_s);
  void SubmitLayers(double now_s);
  void LayerComputed(uint32_t layer);
  void FinishSelective(double first_token_start_s, double first_token_end_s);
  void MaybeDoneSelective();
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
  bool open_ = false;
  double start_s_ = 0, rtt_s_ = 0;
  // Throughput measurement.
  std::vector<policies::ThroughputSample> samples_, chunk_samples_;
  bool interval_open_ = false;
  double interval_start_s_ = 0;
  uint64_t interval_bytes_ = 0;
  double first_token_slot_start_s_ = 0;
  // Selective schedule: parts are named by layer; the partial keys are part
  // `layers`, the rest part `layers + 1`.
  bool selective_ = false;
  policies::SelectivePlan plan_;
  std::vector<Layer> layers_;
  uint64_t partial_key_bytes_ = 0;
  bool keys_in_ = false, rest_sent_ = false, rest_in_ = false, first_token_done_ = false;
  uint32_t next_request_layer_ = 0, next_gpu_layer_ = 0, computed_layers_ = 0;
  double before_first_token_end_s_ = 0;
  std::vector<std::pair<double, double>> decode_slots_, compute_slots_;
};

}  // namespace kvs::sim
