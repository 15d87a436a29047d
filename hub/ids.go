package hub

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// Relay-assigned ids (replay on, no history) are "<node>-<sealed seq>":
// the hub's sequence number encrypted with a key of this hub's own. A
// client cannot read from an id how many events other channels carried,
// and a publisher cannot forge one ahead of the sequence: an id the hub
// did not make opens to nothing, and a resume from it gets a reset.

// idSealer seals and opens sequence numbers.
type idSealer struct{ block cipher.Block }

func newIDSealer() idSealer {
	var key [16]byte
	_, _ = rand.Read(key[:])
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return idSealer{block}
}

// seal encrypts seq in a block whose first half is zero.
func (s idSealer) seal(seq uint64) string {
	var b [aes.BlockSize]byte
	binary.BigEndian.PutUint64(b[8:], seq)
	s.block.Encrypt(b[:], b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// open decrypts what seal made, or reports false: a block that does not
// decrypt to a zero first half was not sealed with this key (one chance
// in 2^64 for a guess).
func (s idSealer) open(text string) (uint64, bool) {
	var b [aes.BlockSize]byte
	enc := base64.RawURLEncoding.Strict() // one text per block: no spare bits to vary
	if enc.DecodedLen(len(text)) != len(b) {
		return 0, false
	}
	if _, err := enc.Decode(b[:], []byte(text)); err != nil {
		return 0, false
	}
	s.block.Decrypt(b[:], b[:])
	if binary.BigEndian.Uint64(b[:8]) != 0 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[8:]), true
}

// relayID is the id the hub gives the event at seq.
func (h *Hub) relayID(seq uint64) string { return h.node + "-" + h.ids.seal(seq) }

// nodeID is a short random prefix that tells this hub's ids from those of
// another node or an earlier process.
func nodeID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return strconv.FormatUint(n, 36)
}
