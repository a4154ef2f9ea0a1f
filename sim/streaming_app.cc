#include "sim/streaming_app.h"

#include <algorithm>
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
    used += request_bytes_;
    const auto& ctxs = *contexts_;
    if (context >= ctxs.size() || chunk >= ctxs[context].chunks.size() ||
        level >= ctxs[context].chunks[chunk].bytes.size())
      throw Error(fmt::format("chunk server: request for context {} chunk {} level {} outside the profile", context,
                              chunk, level));
    Response r;
    r.payload_left = ctxs[context].chunks[chunk].bytes[level];
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
  socket_->Connect(server_);
  socket_open_ = true;
}

void TcpChunkTransport::Close() {
  if (socket_open_) socket_->Close();
  socket_open_ = false;
}

void TcpChunkTransport::HandleConnected(ns3::Ptr<ns3::Socket>) {
  connected_ = true;
  receiver_->TransportConnected(now_s() - start_s_);
  errors_->guard([&] { Flush(); });
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

void TcpChunkTransport::HandleRead(ns3::Ptr<ns3::Socket> socket) {
  errors_->guard([&] { Read(socket); });
}

void TcpChunkTransport::Read(ns3::Ptr<ns3::Socket> socket) {
  const double now = now_s();
  while (ns3::Ptr<ns3::Packet> packet = socket->Recv()) {
    const uint32_t size = packet->GetSize();
    if (size == 0) break;
    receiver_->TransportRead(size, now);
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
  s_.result->chunks[chunk].first_byte_s = t;
  s_.log->add(t, s_.request_id, "first_byte", fmt::format("\"chunk\":{}", chunk));
}

void ChunkClient::TransportArrived(uint32_t chunk, double now) { ChunkArrived(chunk, now); }

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
  chunks_[i].fetch = true;
  SendRequest(i, action.level);
}

void ChunkClient::DecideMore() {
  const double now = now_s();
  if (hybrid_) {
    DecideBackward(now);
    return;
  }
  // Work that is ready goes to the GPU first, so that the policy sees it queued.
  SubmitReadyWork();
  while (next_decide_ < total_chunks_ && outstanding_ < s_.in_flight) Decide(next_decide_++, now);
  SubmitReadyWork();
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
    if (d.chunk == chunk) d.arrived_s = now;
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
    duration = cp.recompute_s;
    r.recompute_total_s += duration;
    ++r.recomputed_chunks;
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
  for (const auto& c : r.chunks)
    if (c.level >= 0) net_end = std::max(net_end, c.last_byte_s);
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

}  // namespace kvs::sim
