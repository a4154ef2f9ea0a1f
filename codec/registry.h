// Finding the codec that decodes a stream (make_codec and codec_names are
// declared in codec/codec.h; the registry itself is codec/registry.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace kvs::codec {

// The registry name of the codec whose id the stream's header carries;
// throws CorruptStream when the stream is too short or the id unknown.
std::string codec_for_stream(std::span<const uint8_t> stream);

}  // namespace kvs::codec
