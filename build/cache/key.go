package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// keyVersion names the format of key preimages. Change it whenever the
// meaning of a key changes, so old records can never be served by mistake.
const keyVersion = "builder.step.v1"

// Key is the hex sha256 of a step's preimage. The parent of a first step is
// not a step's key but "scratch" or "image:<config digest>" (see Preimage).
type Key string

// Valid reports whether k is a hex sha256, as every step key is.
func (k Key) Valid() bool { return validHex(string(k)) }

// Preimage is the structured input of a step's cache key. Keeping it
// structured (rather than joined strings) keeps distinct inputs distinct,
// and keeping it with the record lets a miss be explained later.
type Preimage struct {
	V      string            `json:"v"`
	Parent string            `json:"parent"`           // key of the filesystem state the step starts from
	Op     string            `json:"op"`               // instruction kind
	Args   []string          `json:"args,omitempty"`   // expanded instruction arguments
	State  map[string]string `json:"state,omitempty"`  // config state the step can see (env, user, workdir…)
	Inputs map[string]string `json:"inputs,omitempty"` // digests of files the step reads
}

// Key returns the key of p and the JSON it hashes, with V set to the
// current version.
func (p Preimage) Key() (Key, []byte) {
	p.V = keyVersion
	dt, err := json.Marshal(p)
	if err != nil {
		panic(err) // only strings and maps of strings: cannot fail
	}
	sum := sha256.Sum256(dt)
	return Key(hex.EncodeToString(sum[:])), dt
}

// validHex reports whether s is a lower-case hex sha256.
func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
