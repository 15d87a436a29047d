package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram with lock-free recording: 16
// sub-buckets per power of two, so quantiles are within ~6%.
type hist struct {
	buckets [64 * 16]atomic.Uint64
	count   atomic.Uint64
	max     atomic.Int64
}

func bucketOf(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	u := uint64(ns)
	exp := bits.Len64(u) - 1       // >= 4
	mant := (u >> (exp - 4)) & 0xf // next 4 bits
	return (exp-3)*16 + int(mant)
}

func lowerOf(b int) int64 {
	if b < 16 {
		return int64(b)
	}
	exp := b/16 + 3
	mant := uint64(b % 16)
	return int64((16 | mant) << (exp - 4))
}

func (h *hist) record(d time.Duration) {
	ns := int64(d)
	h.buckets[bucketOf(ns)].Add(1)
	h.count.Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// quantile returns the lower bound of the bucket holding quantile q.
func (h *hist) quantile(q float64) time.Duration {
	total := h.count.Load()
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total))
	var seen uint64
	for b := range h.buckets {
		seen += h.buckets[b].Load()
		if seen > rank {
			return time.Duration(lowerOf(b))
		}
	}
	return time.Duration(h.max.Load())
}
