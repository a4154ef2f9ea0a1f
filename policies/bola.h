// BOLA-E (Spiteri, Urgaonkar, Sitaraman, INFOCOM'16 and "From theory to
// practice: improving bitrate adaptation in the DASH reference player",
// ToN/MMSys'18), as sabre's BolaEnh runs it (src/sabre.py), mapped to KV
// chunks: `bola`.
//
// Ladder. Per chunk, the levels sorted by bytes (ties: lower loss first); a
// level that has more bytes than one kept before it but not a strictly lower
// quality_cost is dominated and skipped (never chosen). Utilities as BolaEnh:
// u_q = 1 + ln(S_q / S_min) (so the coarsest has utility 1).
//
// Buffer -> slack. The video buffer becomes the SLO slack: deadline minus the
// predicted TTFT (pipelined Pipeline from the decision state, chunks still in
// flight and those decided behind them included, Pipeline::after_decided;
// fetch time fetch_s(bytes, C, 0) with C the harmonic mean of the last `window`
// chunk samples, RTT included, or `initial_mbps` before any) when this chunk and
// every later one are fetched at their fewest-bytes level. It is the time the
// request can still spend on finer levels; choosing level q spends
// extra_q = TTFT(q now, fewest bytes later) - TTFT(fewest bytes throughout).
// Unlike a video buffer it does not refill: BOLA spends it down to its
// minimum and then holds the coarsest level.
//
// Constants, as sabre's BolaEnh in seconds of slack but as fractions of the
// SLO so that one default fits 2 s and 5 s SLOs: m = min_slack x SLO (sabre's
// minimum_buffer 10 s), B = max(target_slack x SLO, m x (1 + 0.2 x ladder
// size)) (sabre: max(max buffer 25 s, 10 s + 2 s per level)), with defaults
// 0.1 and 0.25 keeping sabre's ratio 10/25. gamma p = (u_max - 1) / (B/m - 1),
// V = m / gamma p (sabre's formulas; recomputed per chunk from its ladder).
// Choice: argmax_q (V (u_q + gamma p) - (slack + placeholder)) / S_q (first
// maximum from the coarsest); between slack ~m (coarsest) and ~B (finest).
//
// BOLA-E's startup and placeholder (`placeholder`, default on): the first
// decision takes the finest ladder level whose fetch time fits the per-chunk
// share of the time left, (deadline - now - first_token_s) / chunks left
// (sabre's quality_from_throughput: download time <= segment duration), and
// sets placeholder = max(0, min_slack(q) - slack), the least effective slack
// at which the rule keeps q (sabre's min_buffer_for_quality). sabre picks the
// lowest quality until one throughput is measured; we plan the first chunk
// with `initial_mbps` instead. Later decisions add the placeholder to the
// slack; when the rule takes the finest level with more effective slack than
// V (u_max + gamma p), the excess is taken off the placeholder (sabre's
// delay, absorbed by the placeholder: there is no waiting here). sabre's
// step-up limit by the throughput rule and abandonment are not used, nor
// are report_download's clamps of the placeholder after each download (to the
// effective buffer range of the level just fetched): after the
// insufficient-buffer rule has lowered a level, the next chunk may go lower
// still where sabre would hold that level.
//
// Insufficient-buffer rule (`ibr`, default on): a level is allowed only if
// extra_q <= safety x max(0, slack), safety starting at 0.9 and multiplied by
// 0.9 per decision down to 0.5 (sabre's low_buffer_safety_factor_init /
// low_buffer_safety_factor); applied at every decision (sabre: not at its
// startup decision). When it lowers the level, the placeholder is cut to
// max(0, min_slack(q) - slack), as sabre.
//
// Recompute: only when the slack is negative (even the fewest bytes
// everywhere misses the SLO) and recomputing this chunk gives an earlier
// predicted TTFT than fetching it at its fewest-bytes level. Without an SLO:
// the finest ladder level (least loss).
#pragma once

#include <vector>

#include "policies/policy.h"

namespace kvs::policies {

// The chunk's non-dominated levels, fewest bytes first (strictly more bytes
// and strictly less quality_cost along the list), among its first `levels`.
std::vector<int> bola_ladder(const ChunkInfo& chunk, uint32_t levels);

PolicyInfo bola_policy();

}  // namespace kvs::policies
