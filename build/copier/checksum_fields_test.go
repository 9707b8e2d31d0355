package copier

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestRequestHeaderCoversRequest fails when a field is added to Request but
// not to the checksum header: such a field would change what Copy does
// without changing the cache key. A field that must stay out of the key
// belongs in notHashed, with the reason.
func TestRequestHeaderCoversRequest(t *testing.T) {
	notHashed := map[string]string{
		"Extract": "a function; ADD's extraction is keyed by Add",
	}
	mode, err := parseChmod("")
	if err != nil {
		t.Fatal(err)
	}
	header, err := requestHeader(Source{}, Request{}, mode)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(header, &fields); err != nil {
		t.Fatal(err)
	}
	rt := reflect.TypeFor[Request]()
	for i := range rt.NumField() {
		name := rt.Field(i).Name
		if _, ok := notHashed[name]; ok {
			continue
		}
		if _, ok := fields[name]; !ok {
			t.Errorf("Request.%s is not in the checksum header: add it to requestHeader (or to notHashed, saying why)", name)
		}
	}
}
