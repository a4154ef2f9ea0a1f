#include "sim/streaming_app.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "ns3/inet-socket-address.h"
#include "ns3/packet.h"
#include "ns3/simulator.h"
#include "ns3/tcp-socket-factory.h"

#include "base/error.h"

namespace kvs::sim {

namespace {

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32; }

double now_s() { return ns3::Simulator::Now().GetSeconds(); }

// The most the client takes from its socket per Recv. ns-3.37's
// TcpRxBuffer::Extract joins the in-order segments it hands out with
// Packet::AddAtEnd, which copies the packet built so far (into a new buffer
// of exactly the new size) for every segment whose payload holds real bytes,
// and segments cut across two of the server's writes do (ns-3's
// TcpTxBuffer::MergeItems writes out the zero bytes of the second write).
// Taking the megabytes a repaired loss releases at once cost a copy of
// megabytes per segment: 10 million page faults and 16 s of system time for
// one 300 MB chunk at 10 Gbit/s. 64 KiB (the largest segment) bounds each
// copy; the same bytes arrive at the same times, and the throughput samples
// still see one read per callback (BENCHMARKS.md, the 1 GB transfer).
constexpr uint32_t kMaxReadBytes = 65536;

}  // namespace

void ErrorSlot::StopSimulator() { ns3::Simulator::Stop(); }

// ---- server -------------------------------------------------------------------

ChunkServer::ChunkServer(uint16_t port, const std::vector<ContextSpec>* contexts, uint32_t request_bytes,
                         uint32_t response_header_bytes, ErrorSlot* errors)
    : port_(port),
      contexts_(contexts),
      request_bytes_(request_bytes),
      response_header_bytes_(response_header_bytes),
      errors_(errors) {}

void ChunkServer::StartApplication() {
  listener_ = ns3::Socket::CreateSocket(GetNode(), ns3::TcpSocketFactory::GetTypeId());
  listener_->Bind(ns3::InetSocketAddress(ns3::Ipv4Address::GetAny(), port_));
  listener_->Listen();
  listener_->SetAcceptCallback(ns3::MakeNullCallback<bool, ns3::Ptr<ns3::Socket>, const ns3::Address&>(),
                               ns3::MakeCallback(&ChunkServer::HandleAccept, this));
}

void ChunkServer::StopApplication() {
  for (auto& [socket, conn] : connections_) socket->Close();
  connections_.clear();
  if (listener_) listener_->Close();
}

void ChunkServer::HandleAccept(ns3::Ptr<ns3::Socket> socket, const ns3::Address&) {
  connections_[socket];
  socket->SetRecvCallback(ns3::MakeCallback(&ChunkServer::HandleRead, this));
  socket->SetSendCallback(ns3::MakeCallback(&ChunkServer::Pump, this));
}

void ChunkServer::HandleRead(ns3::Ptr<ns3::Socket> socket) {
  errors_->guard([&] { Read(socket); });
}

void ChunkServer::Read(ns3::Ptr<ns3::Socket> socket) {
  auto& conn = connections_[socket];
  while (ns3::Ptr<ns3::Packet> packet = socket->Recv()) {
    const uint32_t n = packet->GetSize();
    if (n == 0) break;
    const size_t old = conn.rx.size();
    conn.rx.resize(old + n);
    packet->CopyData(reinterpret_cast<uint8_t*>(conn.rx.data() + old), n);
  }
  size_t used = 0;
  while (conn.rx.size() - used >= request_bytes_) {
    const auto* p = reinterpret_cast<const uint8_t*>(conn.rx.data() + used);
    const uint32_t tag = get_u32(p), context = get_u32(p + 4), chunk = get_u32(p + 8), level = get_u32(p + 12);
    const bool part = (level & kPartRequestFlag) != 0;
    if (part && conn.rx.size() - used < request_bytes_ + kPartRequestExtraBytes) break;  // its byte count is not in yet
    const auto& ctxs = *contexts_;
    Response r;
    if (part) {
      if (context >= ctxs.size())
        throw Error(fmt::format("chunk server: part request for context {} outside the profile", context));
      r.payload_left = get_u64(p + request_bytes_);
      used += request_bytes_ + kPartRequestExtraBytes;
    } else {
      used += request_bytes_;
      if (context >= ctxs.size() || chunk >= ctxs[context].chunks.size() ||
          level >= ctxs[context].chunks[chunk].bytes.size())
        throw Error(fmt::format("chunk server: request for context {} chunk {} level {} outside the profile", context,
                                chunk, level));
      r.payload_left = ctxs[context].chunks[chunk].bytes[level];
    }
    put_u32(r.header, tag);
    put_u32(r.header, chunk);
    put_u64(r.header, r.payload_left);
    r.header.resize(response_header_bytes_, '\0');
    conn.queue.push_back(std::move(r));
  }
  conn.rx.erase(0, used);
  Pump(socket, socket->GetTxAvailable());
}

// Fills the socket's send buffer from the queue of responses.
void ChunkServer::Pump(ns3::Ptr<ns3::Socket> socket, uint32_t) {
  auto it = connections_.find(socket);
  if (it == connections_.end()) return;
  auto& queue = it->second.queue;
  while (!queue.empty()) {
    Response& r = queue.front();
    uint32_t room = socket->GetTxAvailable();
    if (room == 0) return;
    if (r.header_sent < r.header.size()) {
      const uint32_t n = std::min<uint32_t>(room, uint32_t(r.header.size() - r.header_sent));
      auto p = ns3::Create<ns3::Packet>(reinterpret_cast<const uint8_t*>(r.header.data() + r.header_sent), n);
      const int sent = socket->Send(p);
      if (sent <= 0) return;
      r.header_sent += uint32_t(sent);
      continue;
    }
    if (r.payload_left > 0) {
      const uint32_t n = uint32_t(std::min<uint64_t>(room, r.payload_left));
      const int sent = socket->Send(ns3::Create<ns3::Packet>(n));  // virtual (zero) bytes
      if (sent <= 0) return;
      r.payload_left -= uint64_t(sent);
      continue;
    }
    queue.pop_front();
  }
}

// ---- ns-3 TCP transport ------------------------------------------------------------

TcpChunkTransport::TcpChunkTransport(ns3::Ptr<ns3::Node> node, const ns3::Address& server, uint32_t request_id,
                                     uint32_t context, uint32_t request_bytes, uint32_t response_header_bytes,
                                     ErrorSlot* errors)
    : node_(node),
      server_(server),
      request_id_(request_id),
      context_(context),
      request_bytes_(request_bytes),
      response_header_bytes_(response_header_bytes),
      errors_(errors) {}

void TcpChunkTransport::Open(Receiver* receiver) {
  receiver_ = receiver;
  start_s_ = now_s();
  socket_ = ns3::Socket::CreateSocket(node_, ns3::TcpSocketFactory::GetTypeId());
  socket_->Bind();
  socket_->SetConnectCallback(ns3::MakeCallback(&TcpChunkTransport::HandleConnected, this),
                              ns3::MakeNullCallback<void, ns3::Ptr<ns3::Socket>>());
  socket_->SetRecvCallback(ns3::MakeCallback(&TcpChunkTransport::HandleRead, this));
  socket_->SetSendCallback(ns3::MakeCallback(&TcpChunkTransport::HandleSendSpace, this));
  socket_->SetCloseCallbacks(ns3::MakeCallback(&TcpChunkTransport::HandleDropped, this),
                             ns3::MakeCallback(&TcpChunkTransport::HandleDropped, this));
  socket_->Connect(server_);
  socket_open_ = true;
}

void TcpChunkTransport::Close() {
  const bool open = socket_open_;
  socket_open_ = false;  // first: closing may report through HandleDropped
  if (open) socket_->Close();
}

void TcpChunkTransport::HandleConnected(ns3::Ptr<ns3::Socket>) {
  connected_ = true;
  receiver_->TransportConnected(now_s() - start_s_);
  errors_->guard([&] { Flush(); });
}

void TcpChunkTransport::HandleDropped(ns3::Ptr<ns3::Socket>) {
  if (!socket_open_) return;  // our own Close()
  socket_open_ = false;
  errors_->guard([&] {
    throw Error(fmt::format("chunk client: request {} lost its TCP connection at t = {:.6f} s with {} chunk request(s) "
                            "unanswered (TCP gave up after its data retransmissions, or was reset)",
                            request_id_, now_s(), pending_.size()));
  });
}

void TcpChunkTransport::HandleSendSpace(ns3::Ptr<ns3::Socket>, uint32_t) {
  errors_->guard([&] { Flush(); });
}

void TcpChunkTransport::Flush() {
  if (!connected_ || outbox_.empty()) return;
  const int sent = socket_->Send(reinterpret_cast<const uint8_t*>(outbox_.data()), uint32_t(outbox_.size()), 0);
  if (sent > 0) outbox_.erase(0, size_t(sent));
}

void TcpChunkTransport::Request(uint32_t chunk, int level, uint64_t) {
  std::string req;
  put_u32(req, request_id_);
  put_u32(req, context_);
  put_u32(req, chunk);
  put_u32(req, uint32_t(level));
  req.resize(request_bytes_, '\0');
  outbox_ += req;
  pending_.push_back(chunk);
  Flush();
}

void TcpChunkTransport::RequestPart(uint32_t part, int level, uint64_t payload_bytes) {
  std::string req;
  put_u32(req, request_id_);
  put_u32(req, context_);
  put_u32(req, part);
  put_u32(req, uint32_t(level) | kPartRequestFlag);
  req.resize(request_bytes_, '\0');
  put_u64(req, payload_bytes);
  outbox_ += req;
  pending_.push_back(part);
  Flush();
}

void TcpChunkTransport::HandleRead(ns3::Ptr<ns3::Socket> socket) {
  errors_->guard([&] { Read(socket); });
}

void TcpChunkTransport::Read(ns3::Ptr<ns3::Socket> socket) {
  const double now = now_s();
  // All the socket holds counts as one read, as when one Recv() took it all:
  // the throughput samples (ChunkClient::OnBytes) see the same reads.
  const uint32_t available = socket->GetRxAvailable();
  if (available > 0) receiver_->TransportRead(available, now);
  while (ns3::Ptr<ns3::Packet> packet = socket->Recv(kMaxReadBytes, 0)) {
    const uint32_t size = packet->GetSize();
    if (size == 0) break;
    uint32_t offset = 0;
    while (offset < size) {
      if (!in_payload_) {
        if (pending_.empty()) throw Error("chunk client: response bytes without a request");
        const uint32_t take = std::min(response_header_bytes_ - header_have_, size - offset);
        if (header_have_ < kResponseHeaderBytes) {
          const uint32_t keep = std::min(take, kResponseHeaderBytes - header_have_);
          packet->CreateFragment(offset, keep)->CopyData(header_ + header_have_, keep);
        }
        header_have_ += take;
        offset += take;
        if (header_have_ == response_header_bytes_) {
          const uint32_t chunk = get_u32(header_ + 4);
          if (chunk != pending_.front()) throw Error(fmt::format("chunk client: got chunk {}, expected {}", chunk, pending_.front()));
          payload_left_ = get_u64(header_ + 8);
          header_have_ = 0;
          in_payload_ = true;
          receiver_->TransportFirstByte(chunk, now);
          if (payload_left_ == 0) {
            in_payload_ = false;
            pending_.pop_front();
            receiver_->TransportArrived(chunk, now);
          }
        }
      } else {
        const uint64_t take = std::min<uint64_t>(payload_left_, size - offset);
        payload_left_ -= take;
        offset += uint32_t(take);
        if (payload_left_ == 0) {
          in_payload_ = false;
          const uint32_t chunk = pending_.front();
          pending_.pop_front();
          receiver_->TransportArrived(chunk, now);
        }
      }
    }
  }
}

// ---- client -------------------------------------------------------------------

ChunkClient::ChunkClient(ClientSetup setup) : s_(std::move(setup)) {
  total_chunks_ = uint32_t(s_.spec->chunks.size());
  chunks_.resize(total_chunks_);
  hybrid_ = s_.policy->schedule() == policies::Schedule::kLoadBackComputeFront;
  selective_ = s_.policy->schedule() == policies::Schedule::kSelectiveLayers;
  back_ = total_chunks_;
}

void ChunkClient::StartApplication() {
  s_.errors->guard([&] { Start(); });
}

void ChunkClient::Start() {
  start_s_ = now_s();
  auto& r = *s_.result;
  r.start_s = start_s_;
  r.chunks.resize(total_chunks_);
  for (uint32_t i = 0; i < total_chunks_; ++i) {
    r.chunks[i].index = i;
    r.chunks[i].tokens = s_.spec->chunks[i].tokens;
  }
  s_.log->add(start_s_, s_.request_id, "request",
              fmt::format("\"context\":{},\"tokens\":{},\"chunks\":{},\"network\":{}", json_string(s_.spec->id),
                          s_.spec->tokens, total_chunks_, json_string(s_.network_model)));
  if (s_.give_future) {
    policies::NetworkFuture f = s_.future;
    f.request_start_s = start_s_;
    s_.policy->see_future(f);
  }
  s_.transport->Open(this);
  open_ = true;
  if (selective_) {
    StartSelective();
    return;
  }
  DecideMore();
  if (hybrid_) AdvanceFront();
}

void ChunkClient::StopApplication() {
  if (open_) s_.transport->Close();
  open_ = false;
}

void ChunkClient::TransportConnected(double rtt_s) {
  rtt_s_ = rtt_s;
  s_.log->add(now_s(), s_.request_id, "connected");
}

void ChunkClient::TransportRead(uint64_t bytes, double now) {
  s_.result->wire_bytes += bytes;
  OnBytes(bytes, now);
}

void ChunkClient::TransportFirstByte(uint32_t chunk, double t) {
  if (selective_) {
    s_.log->add(t, s_.request_id, "first_byte", fmt::format("\"part\":{}", chunk));
    return;
  }
  s_.result->chunks[chunk].first_byte_s = t;
  s_.log->add(t, s_.request_id, "first_byte", fmt::format("\"chunk\":{}", chunk));
}

void ChunkClient::TransportArrived(uint32_t chunk, double now) {
  if (selective_)
    SelectiveArrived(chunk, now);
  else
    ChunkArrived(chunk, now);
}

policies::StreamState ChunkClient::MakeState(double now, uint32_t chunk) const {
  policies::StreamState st;
  st.now_s = now;
  st.elapsed_s = now - start_s_;
  st.slo_s = s_.slo_s;
  st.next_chunk = chunk;
  st.total_chunks = total_chunks_;
  st.levels = uint32_t(s_.spec->chunks.empty() ? 0 : s_.spec->chunks[0].bytes.size());
  st.chunks = &s_.spec->chunks;
  st.quality_measure = s_.spec->quality_measure;
  st.decisions = decisions_;
  st.samples = samples_;
  st.chunk_samples = chunk_samples_;
  st.rtt_s = rtt_s_;
  st.gpu_busy_until_s = s_.gpu->busy_until_s(now);
  st.first_token_s = s_.spec->first_token_s;
  if (s_.spec->windowed() && chunk < total_chunks_ && !selective_) {
    const policies::RecomputeFetch f = MissingForRecompute(chunk);
    st.recompute_fetch_bytes = uint64_t(std::llround(f.bytes));
    st.recompute_fetch_decode_s = f.decode_s;
    st.recompute_fetch_quality_cost = f.quality_cost;
  }
  return st;
}

// Asks the policy about `chunk` and acts on the answer: a request, or (in
// order) recompute.
void ChunkClient::Decide(uint32_t i, double now) {
  const policies::Action action = s_.policy->decide(MakeState(now, i));
  const auto& spec = s_.spec->chunks[i];
  if (!action.recompute() && (action.level < 0 || size_t(action.level) >= spec.bytes.size()))
    throw Error(fmt::format("policy {} chose level {} for chunk {}, but the codec has {} levels",
                            s_.policy->name(), action.level, i, spec.bytes.size()));
  if (hybrid_ && action.recompute()) {
    // The front takes the rest.
    fetch_stopped_ = true;
    s_.log->add(now, s_.request_id, "decision",
                fmt::format("\"chunk\":{},\"action\":\"stop_fetching\",\"reason\":{}", i, json_string(action.reason)));
    return;
  }
  auto& rec = s_.result->chunks[i];
  rec.level = action.level;
  rec.reason = action.reason;
  rec.decided_s = now;
  rec.estimate_bps = samples_.empty() ? 0.0 : samples_.back().rate_bps();
  chunks_[i].decided = true;
  decisions_.push_back({i, action.level, now, -1});
  if (action.recompute()) {
    s_.log->add(now, s_.request_id, "decision",
                fmt::format("\"chunk\":{},\"action\":\"recompute\",\"estimate_bps\":{},\"reason\":{}", i,
                            json_number(std::round(rec.estimate_bps)), json_string(action.reason)));
    if (s_.spec->windowed() && FetchForRecompute(i, now)) return;
    chunks_[i].ready = true;
    if (s_.on_chunk) s_.on_chunk();
    return;
  }
  rec.payload_bytes = spec.bytes[size_t(action.level)];
  rec.quality_cost = spec.quality_cost[size_t(action.level)];
  s_.log->add(now, s_.request_id, "decision",
              fmt::format("\"chunk\":{},\"level\":{},\"bytes\":{},\"estimate_bps\":{},\"reason\":{}", i,
                          s_.spec->level_number(action.level), rec.payload_bytes, json_number(std::round(rec.estimate_bps)),
                          json_string(action.reason)));
  if (s_.spec->windowed()) {
    if (rec.payload_bytes == 0) {  // no layer reads it: nothing to fetch or decode
      rec.request_sent_s = rec.first_byte_s = rec.last_byte_s = now;
      chunks_[i].ready = true;
      for (auto& d : decisions_)
        if (d.chunk == i) d.arrived_s = now;
      if (s_.on_chunk) s_.on_chunk();
      if (hybrid_) SubmitGpu(i, now);
      return;
    }
  }
  chunks_[i].fetch = true;
  SendRequest(i, action.level);
}

// Recomputing chunk i runs every layer over its tokens; a windowed layer
// reads there the keys and values of the tokens before the chunk within its
// window, which a chunk fetched earlier may have left out (the query did not
// need them). Those layers are fetched now, at the level their chunk was
// fetched at, as one request; the recompute starts once they are in
// (policies::recompute_fetch: what the planners predict is what runs here).
policies::RecomputeFetch ChunkClient::MissingForRecompute(uint32_t i) const {
  return policies::recompute_fetch(s_.spec->chunks[i], i, [&](uint32_t j) {
    return chunks_[j].decided ? s_.result->chunks[j].level : policies::Action::kRecompute;
  });
}

bool ChunkClient::FetchForRecompute(uint32_t i, double now) {
  const policies::RecomputeFetch f = MissingForRecompute(i);
  const uint64_t bytes = uint64_t(std::llround(f.bytes));
  auto& rec = s_.result->chunks[i];
  rec.quality_cost = f.quality_cost;  // the degraded layers it reads enter its KV
  if (bytes == 0) return false;
  rec.payload_bytes = bytes;
  chunks_[i].repair_decode_s = f.decode_s;
  chunks_[i].fetch = true;
  s_.log->add(now, s_.request_id, "window_fetch",
              fmt::format("\"chunk\":{},\"layer_chunks\":{},\"bytes\":{}", i, f.layers, bytes));
  ++outstanding_;
  rec.request_sent_s = now;
  s_.result->wire_bytes += s_.request_bytes + kPartRequestExtraBytes;
  s_.transport->RequestPart(i, 0, bytes);
  return true;
}

void ChunkClient::DecideMore() {
  const double now = now_s();
  if (hybrid_) {
    DecideBackward(now);
    return;
  }
  // Work that is ready goes to the GPU before each decision, so that the
  // policy sees it queued (a recompute decided a moment ago included).
  SubmitReadyWork();
  while (next_decide_ < total_chunks_ && outstanding_ < s_.in_flight) {
    Decide(next_decide_++, now);
    SubmitReadyWork();
  }
}

// ---- the Cake-style schedule ---------------------------------------------------

void ChunkClient::DecideBackward(double now) {
  while (!fetch_stopped_ && outstanding_ < s_.in_flight && back_ > front_) {
    Decide(back_ - 1, now);
    if (fetch_stopped_) break;
    --back_;
  }
  MaybeFinishHybrid(now);
}

// Claims the next chunk from the front for recompute, unless the network has
// claimed it already.
void ChunkClient::AdvanceFront() {
  if (front_busy_ || front_ >= back_) return;
  const double now = now_s();
  const uint32_t i = front_++;
  auto& rec = s_.result->chunks[i];
  rec.level = policies::Action::kRecompute;
  rec.reason = "front: recompute";
  rec.decided_s = now;
  chunks_[i].decided = chunks_[i].ready = true;
  decisions_.push_back({i, policies::Action::kRecompute, now, -1});
  s_.log->add(now, s_.request_id, "decision",
              fmt::format("\"chunk\":{},\"action\":\"recompute\",\"estimate_bps\":0,\"reason\":\"front\"", i));
  if (s_.on_chunk) s_.on_chunk();
  front_busy_ = true;
  SubmitGpu(i, now);
  ns3::Simulator::Schedule(ns3::Seconds(rec.gpu_end_s - now), &ChunkClient::FrontDone, this);
}

void ChunkClient::FrontDone() {
  s_.errors->guard([&] {
    front_busy_ = false;
    AdvanceFront();
    MaybeFinishHybrid(now_s());
  });
}

// The first token, once every chunk is claimed, received and queued on the GPU.
void ChunkClient::MaybeFinishHybrid(double now) {
  if (first_token_submitted_ || front_busy_ || front_ < back_ || outstanding_ > 0 || gpu_submitted_ < total_chunks_)
    return;
  SubmitFirstToken(now);
}

void ChunkClient::SendRequest(uint32_t chunk, int level) {
  ++outstanding_;
  s_.result->chunks[chunk].request_sent_s = now_s();
  s_.result->wire_bytes += s_.request_bytes;
  s_.transport->Request(chunk, level, s_.result->chunks[chunk].payload_bytes);
}

// Interval samples: an interval opens at a read while data flows; the bytes of
// later reads count; it closes once it spans at least the sample interval, or
// is dropped when the connection goes idle (no request outstanding).
void ChunkClient::OnBytes(uint64_t bytes, double now) {
  if (!interval_open_) {
    interval_open_ = true;
    interval_start_s_ = now;
    interval_bytes_ = 0;
    return;
  }
  interval_bytes_ += bytes;
  if (now - interval_start_s_ >= s_.sample_interval_s) {
    samples_.push_back({interval_start_s_, now, interval_bytes_});
    interval_start_s_ = now;
    interval_bytes_ = 0;
  }
}

void ChunkClient::ChunkArrived(uint32_t chunk, double now) {
  --outstanding_;
  auto& rec = s_.result->chunks[chunk];
  rec.last_byte_s = now;
  s_.result->payload_bytes += rec.payload_bytes;
  chunk_samples_.push_back({rec.request_sent_s, now, rec.payload_bytes + s_.response_header_bytes});
  s_.log->add(now, s_.request_id, "last_byte", fmt::format("\"chunk\":{},\"bytes\":{}", chunk, rec.payload_bytes));
  if (outstanding_ == 0) interval_open_ = false;
  chunks_[chunk].ready = true;
  for (auto& d : decisions_)
    if (d.chunk == chunk && d.level >= 0) d.arrived_s = now;  // (a recompute's window fetch: not a fetched chunk)
  if (s_.on_chunk) s_.on_chunk();
  if (hybrid_) SubmitGpu(chunk, now);  // decoding needs no earlier chunk
  DecideMore();
}

// Queues GPU work in chunk order: chunk i's decode or recompute needs chunks
// before it in the cache, so it waits for them even when its data is ready.
void ChunkClient::SubmitReadyWork() {
  const double now = now_s();
  while (next_gpu_ < total_chunks_ && chunks_[next_gpu_].ready) SubmitGpu(next_gpu_++, now);
  if (next_gpu_ == total_chunks_ && total_chunks_ > 0) SubmitFirstToken(now);
}

// Queues chunk i's decode (fetched) or recompute on the GPU.
void ChunkClient::SubmitGpu(uint32_t i, double now) {
  auto& r = *s_.result;
  const auto& cp = s_.spec->chunks[i];
  auto& rec = r.chunks[i];
  double duration;
  if (rec.level < 0) {
    duration = cp.recompute_s + chunks_[i].repair_decode_s;
    r.recompute_total_s += duration;
    ++r.recomputed_chunks;
    r.quality_cost += rec.quality_cost;  // 0 but for what a windowed recompute read (FetchForRecompute)
  } else {
    duration = cp.decode_s[size_t(rec.level)];
    r.decode_total_s += duration;
    r.quality_cost += rec.quality_cost;
  }
  const auto slot = s_.gpu->submit(now, duration);
  ++gpu_submitted_;
  rec.gpu_start_s = slot.start_s;
  rec.gpu_end_s = slot.end_s;
  s_.log->add(slot.start_s, s_.request_id, rec.level < 0 ? "recompute_start" : "decode_start",
              fmt::format("\"chunk\":{}", i));
  s_.log->add(slot.end_s, s_.request_id, rec.level < 0 ? "recompute_end" : "decode_end",
              fmt::format("\"chunk\":{}", i));
}

void ChunkClient::SubmitFirstToken(double now) {
  if (first_token_submitted_) return;
  first_token_submitted_ = true;
  s_.result->predicted_ttft_s = s_.policy->predicted_ttft_s();
  const auto slot = s_.gpu->submit(now, s_.spec->first_token_s);
  ns3::Simulator::Schedule(ns3::Seconds(slot.end_s - now), &ChunkClient::Finish, this, slot.start_s, slot.end_s);
}

void ChunkClient::Finish(double ft_start, double ft_end) {
  auto& r = *s_.result;
  r.first_token_s = ft_end;
  r.ttft_s = ft_end - start_s_;
  r.finished = true;
  r.slo_met = s_.slo_s <= 0 || r.ttft_s <= s_.slo_s;
  // Critical-path breakdown (see run_log.h).
  double net_end = start_s_;
  for (const auto& c : r.chunks) net_end = std::max(net_end, c.last_byte_s);  // -1 when not fetched
  auto& b = r.breakdown;
  b.network_s = net_end - start_s_;
  auto after = [&](double s, double e) { return std::max(0.0, e - std::max(s, net_end)); };
  for (const auto& c : r.chunks) (c.level < 0 ? b.recompute_s : b.decode_s) += after(c.gpu_start_s, c.gpu_end_s);
  b.first_token_s = after(ft_start, ft_end);
  b.queueing_s = std::max(0.0, r.ttft_s - b.network_s - b.decode_s - b.recompute_s - b.first_token_s);
  s_.log->add(ft_end, s_.request_id, "first_token",
              fmt::format("\"ttft_s\":{},\"slo_met\":{}", json_number(r.ttft_s), r.slo_met ? "true" : "false"));
  if (open_) s_.transport->Close();
  open_ = false;
  if (s_.on_done) s_.errors->guard(s_.on_done);
}

// ---- the selective schedule -----------------------------------------------------

namespace {
const char* part_name(uint32_t part, uint32_t layers) {
  return part < layers ? "layer" : part == layers ? "partial_keys" : "rest";
}
}  // namespace

void ChunkClient::StartSelective() {
  const double now = now_s();
  const ContextSpec& spec = *s_.spec;
  const uint32_t L = spec.layers;
  if (L == 0 || spec.kv_heads == 0 || spec.head_dim == 0)
    throw Error(fmt::format("policy {}: selective loading needs the target model's KV shape (layers, kv_heads, "
                            "head_dim)", s_.policy->name()));
  plan_ = s_.policy->selective_plan(L);
  if (plan_.layer_share.size() != L)
    throw Error(fmt::format("policy {}: its plan has {} layer shares for a {}-layer model", s_.policy->name(),
                            plan_.layer_share.size(), L));
  for (double x : plan_.layer_share)
    if (!(x >= 0 && x <= 1)) throw Error(fmt::format("policy {}: a layer share of {} (expected 0..1)", s_.policy->name(), x));
  if (plan_.layer_share[0] < 1)
    throw Error(fmt::format("policy {}: layer 0 must be fetched in full (there is no layer before it to speculate "
                            "from)", s_.policy->name()));
  if (!(plan_.partial_ratio > 0 && plan_.partial_ratio <= 1))
    throw Error(fmt::format("policy {}: partial_ratio {} (expected (0, 1])", s_.policy->name(), plan_.partial_ratio));
  if (!plan_.layer_window.empty() && plan_.layer_window.size() != L)
    throw Error(fmt::format("policy {}: its plan has {} layer windows for a {}-layer model", s_.policy->name(),
                            plan_.layer_window.size(), L));
  // A plan without windows (a selective profile of a full-attention model)
  // for a target with them (mistral-7b-v0.1): the target's own; its shares
  // are then of each window's keys, as a profile with windows gives.
  if (std::none_of(plan_.layer_window.begin(), plan_.layer_window.end(), [](uint64_t w) { return w > 0; }) &&
      spec.windowed() && spec.layer_windows.size() == L)
    plan_.layer_window.assign(spec.layer_windows.begin(), spec.layer_windows.end());
  layers_.assign(L, Layer{});
  uint32_t selected = 0;
  uint64_t selected_tokens = 0;  // the context tokens whose partial keys the selected layers need
  for (uint32_t l = 0; l < L; ++l)
    if (plan_.layer_share[l] < 1) ++selected, selected_tokens += FirstTokenReads(l);
  // InfiniGen keeps int(ratio x head_dim) channels per head (at least one), as fp16.
  const uint64_t channels = std::max<uint64_t>(1, uint64_t(std::floor(plan_.partial_ratio * spec.head_dim)));
  partial_key_bytes_ = selected_tokens * spec.kv_heads * channels * 2;
  auto& sr = s_.result->selective;
  sr.used = true;
  sr.source = plan_.source;
  sr.per_layer_round_trips = plan_.per_layer_round_trips;
  sr.selected_layers = selected;
  sr.partial_key_bytes = partial_key_bytes_;
  sr.kl_nats = plan_.kl_nats, sr.loss_increase = plan_.loss_increase;
  sr.greedy_agreement = plan_.greedy_agreement, sr.task_accuracy = plan_.task_accuracy;
  sr.greedy_tokens = plan_.greedy_tokens;
  s_.log->add(now, s_.request_id, "selective_plan",
              fmt::format("\"layers\":{},\"selected_layers\":{},\"partial_key_bytes\":{},\"round_trips\":{},"
                          "\"source\":{}",
                          L, selected, partial_key_bytes_,
                          json_string(plan_.per_layer_round_trips ? "per-layer" : "up-front"), json_string(plan_.source)));
  if (partial_key_bytes_ > 0) {
    ++outstanding_;
    s_.result->wire_bytes += s_.request_bytes + kPartRequestExtraBytes;
    s_.log->add(now, s_.request_id, "selective_request",
                fmt::format("\"part\":\"partial_keys\",\"bytes\":{}", partial_key_bytes_));
    s_.transport->RequestPart(L, 0, partial_key_bytes_);
  } else {
    keys_in_ = true;
  }
  SendSelective(now);
}

// The context tokens layer l's first token reads: all of them, or on a
// sliding-window layer the last W-1.
uint64_t ChunkClient::FirstTokenReads(uint32_t l) const {
  const uint64_t T = s_.spec->tokens;
  const uint64_t w = plan_.layer_window.empty() ? 0 : plan_.layer_window[l];
  return w > 0 ? std::min<uint64_t>(T, w - 1) : T;
}

// Requests layers in order while each one can be: a whole layer at once; a
// selected one once the partial keys are in and (per-layer round trips) the
// layers before its speculation input are computed. Then the rest.
void ChunkClient::SendSelective(double now) {
  const ContextSpec& spec = *s_.spec;
  const uint32_t L = uint32_t(layers_.size());
  auto& r = *s_.result;
  while (next_request_layer_ < L) {
    const uint32_t l = next_request_layer_;
    Layer& ly = layers_[l];
    const double share = plan_.layer_share[l];
    if (share < 1) {
      // Layer l is speculated from layer l-1's input, the output of layer l-2.
      const bool input_ready = !plan_.per_layer_round_trips || l < 2 || computed_layers_ >= l - 1;
      if (!keys_in_ || !input_ready) {
        if (keys_in_) ly.blocked = true;
        break;
      }
    }
    const policies::Action a = s_.policy->decide(MakeState(now, l));
    if (a.recompute() || a.level < 0 || size_t(a.level) >= spec.chunks[0].bytes.size())
      throw Error(fmt::format("policy {} chose level {} for layer {}, but the codec has {} levels", s_.policy->name(),
                              a.level, l, spec.chunks[0].bytes.size()));
    ly.level = a.level;
    uint64_t total = 0;
    double decode = 0;
    std::vector<double> before(L + 1, 0.0);  // with the profile's layer split: bytes of the layers before k
    for (size_t c = 0; c < spec.chunks.size(); ++c) {
      if (!spec.layer_bytes.empty()) {  // whole chunks: this schedule applies the windows itself (plan_.layer_window)
        const auto& parts = spec.layer_bytes[c][size_t(a.level)];
        for (uint32_t k = 0; k < L; ++k) before[k + 1] += parts[k];
        decode += spec.layer_decode_s[c][size_t(a.level)] * double(L);
      } else {
        total += spec.chunks[c].bytes[size_t(a.level)], decode += spec.chunks[c].decode_s[size_t(a.level)];
      }
    }
    for (uint32_t k = 0; k < L; ++k) before[k + 1] += before[k];
    if (!spec.layer_bytes.empty()) total = uint64_t(std::llround(before[L]));
    // Layer l's part of the context's bytes (as the profile splits them over
    // layers, else evenly; over tokens evenly); the parts sum to `total`.
    auto cut = [&](uint64_t k) {
      if (!spec.layer_bytes.empty()) return k == L ? total : std::min(total, uint64_t(std::llround(before[k])));
      return total / L * k + total % L * k / L;  // floor(total x k / L)
    };
    const uint64_t in_layer = cut(l + 1) - cut(l);
    // A sliding-window layer's first token reads only its window's tokens.
    const double part =
        std::min(share, 1.0) * (spec.tokens ? double(FirstTokenReads(l)) / double(spec.tokens) : 1.0);
    ly.bytes = part >= 1 ? in_layer : uint64_t(std::llround(part * double(in_layer)));
    ly.rest_bytes = in_layer - ly.bytes;
    ly.decode_s = decode / L * (in_layer ? double(ly.bytes) / double(in_layer) : 0.0);
    ly.requested = true;
    if (ly.blocked) ++r.selective.waits;
    if (l == 0) {  // every chunk is recorded at the level of layer 0's request
      for (uint32_t i = 0; i < total_chunks_; ++i) {
        auto& rec = r.chunks[i];
        rec.level = a.level;
        rec.reason = "selective";
        rec.decided_s = now;
        rec.quality_cost = spec.chunks[i].quality_cost[size_t(a.level)];
        r.quality_cost += rec.quality_cost;
      }
    }
    s_.log->add(now, s_.request_id, "selective_request",
                fmt::format("\"part\":\"layer\",\"layer\":{},\"level\":{},\"share\":{},\"bytes\":{},\"waited\":{},"
                            "\"reason\":{}",
                            l, spec.level_number(a.level), json_number(share), ly.bytes, ly.blocked ? "true" : "false",
                            json_string(a.reason)));
    ++outstanding_;
    r.wire_bytes += s_.request_bytes + kPartRequestExtraBytes;
    s_.transport->RequestPart(l, a.level, ly.bytes);
    ++next_request_layer_;
  }
  if (next_request_layer_ == L && !rest_sent_) {
    rest_sent_ = true;
    uint64_t rest = 0, before = 0;
    for (const auto& ly : layers_) rest += ly.rest_bytes, before += ly.bytes;
    r.selective.rest_bytes = rest;
    r.selective.before_first_token_bytes = partial_key_bytes_ + before;
    r.selective.share_before_first_token = rest + before ? double(before) / double(rest + before) : 1.0;
    if (rest > 0) {
      ++outstanding_;
      r.wire_bytes += s_.request_bytes + kPartRequestExtraBytes;
      s_.log->add(now, s_.request_id, "selective_request", fmt::format("\"part\":\"rest\",\"bytes\":{}", rest));
      s_.transport->RequestPart(L + 1, layers_[0].level, rest);
    } else {
      rest_in_ = true;
    }
  }
}

void ChunkClient::SelectiveArrived(uint32_t part, double now) {
  const uint32_t L = uint32_t(layers_.size());
  if (part > L + 1) throw Error(fmt::format("chunk client: got part {}, which was never requested", part));
  --outstanding_;
  if (outstanding_ == 0) interval_open_ = false;
  auto& r = *s_.result;
  const uint64_t bytes = part < L ? layers_[part].bytes : part == L ? partial_key_bytes_ : r.selective.rest_bytes;
  r.payload_bytes += bytes;
  s_.log->add(now, s_.request_id, "last_byte",
              fmt::format("\"part\":{},\"layer\":{},\"bytes\":{}", json_string(part_name(part, L)),
                          part < L ? int64_t(part) : int64_t(-1), bytes));
  if (part == L + 1) {
    rest_in_ = true;
    r.selective.rest_last_byte_s = now;
    MaybeDoneSelective();
    return;
  }
  before_first_token_end_s_ = std::max(before_first_token_end_s_, now);
  if (part == L) {
    keys_in_ = true;
  } else {
    layers_[part].arrived = true;
    SubmitLayers(now);
  }
  SendSelective(now);
}

// The prompt runs through the layers in order on the GPU: layer l's decode
// and compute (an equal share of the first-token step) once its KV is in.
void ChunkClient::SubmitLayers(double now) {
  const uint32_t L = uint32_t(layers_.size());
  auto& r = *s_.result;
  while (next_gpu_layer_ < L && layers_[next_gpu_layer_].arrived) {
    const uint32_t l = next_gpu_layer_++;
    const auto dec = s_.gpu->submit(now, layers_[l].decode_s);
    const auto comp = s_.gpu->submit(now, s_.spec->first_token_s / L);
    decode_slots_.emplace_back(dec.start_s, dec.end_s);
    compute_slots_.emplace_back(comp.start_s, comp.end_s);
    r.decode_total_s += layers_[l].decode_s;
    s_.log->add(dec.start_s, s_.request_id, "layer_start",
                fmt::format("\"layer\":{},\"decode_s\":{}", l, json_number(layers_[l].decode_s)));
    s_.log->add(comp.end_s, s_.request_id, "layer_end", fmt::format("\"layer\":{}", l));
    ns3::Simulator::Schedule(ns3::Seconds(comp.end_s - now), &ChunkClient::LayerComputed, this, l);
  }
}

void ChunkClient::LayerComputed(uint32_t layer) {
  s_.errors->guard([&] {
    computed_layers_ = layer + 1;
    if (computed_layers_ == layers_.size()) {
      FinishSelective(compute_slots_.front().first, compute_slots_.back().second);
      return;
    }
    SendSelective(now_s());
  });
}

void ChunkClient::FinishSelective(double, double ft_end) {
  auto& r = *s_.result;
  r.first_token_s = ft_end;
  r.ttft_s = ft_end - start_s_;
  r.finished = true;
  r.slo_met = s_.slo_s <= 0 || r.ttft_s <= s_.slo_s;
  r.predicted_ttft_s = s_.policy->predicted_ttft_s();
  // Critical path: the network up to the last byte needed before the first
  // token, then the GPU work after it (decode, and the layers' compute as the
  // first token).
  const double net_end = std::max(start_s_, before_first_token_end_s_);
  auto after = [&](double s, double e) { return std::max(0.0, e - std::max(s, net_end)); };
  auto& b = r.breakdown;
  b.network_s = net_end - start_s_;
  for (const auto& [s, e] : decode_slots_) b.decode_s += after(s, e);
  for (const auto& [s, e] : compute_slots_) b.first_token_s += after(s, e);
  b.queueing_s = std::max(0.0, r.ttft_s - b.network_s - b.decode_s - b.first_token_s);
  s_.log->add(ft_end, s_.request_id, "first_token",
              fmt::format("\"ttft_s\":{},\"slo_met\":{}", json_number(r.ttft_s), r.slo_met ? "true" : "false"));
  first_token_done_ = true;
  MaybeDoneSelective();
}

// The request is done once its first token is out and the rest of its cache is in.
void ChunkClient::MaybeDoneSelective() {
  if (!first_token_done_ || !rest_in_) return;
  if (open_) s_.transport->Close();
  open_ = false;
  if (s_.on_done) s_.errors->guard(s_.on_done);
}

}  // namespace kvs::sim
