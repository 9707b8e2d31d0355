package build

import (
	"encoding/json"
	"time"
)

// go-containerregistry's v1.HealthConfig has no StartInterval (HEALTHCHECK
// --start-interval), which Docker stores in the image config; these
// helpers carry it beside the parsed config.

// healthStartInterval reads config.Healthcheck.StartInterval from a raw
// image config, or 0 when it is absent or unreadable.
func healthStartInterval(rawConfig []byte) time.Duration {
	var c struct {
		Config struct {
			Healthcheck *struct{ StartInterval time.Duration }
		} `json:"config"`
	}
	if json.Unmarshal(rawConfig, &c) != nil || c.Config.Healthcheck == nil {
		return 0
	}
	return c.Config.Healthcheck.StartInterval
}

// withHealthStartInterval returns the config JSON with
// config.Healthcheck.StartInterval set to d. It returns cfgJSON unchanged
// when d is 0 or the config has no health check. Object keys come out
// sorted, so the result is deterministic.
func withHealthStartInterval(cfgJSON []byte, d time.Duration) ([]byte, error) {
	if d == 0 {
		return cfgJSON, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(cfgJSON, &top); err != nil {
		return nil, err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(top["config"], &cfg); err != nil {
		return nil, err
	}
	var hc map[string]json.RawMessage
	if raw, ok := cfg["Healthcheck"]; !ok || json.Unmarshal(raw, &hc) != nil || hc == nil {
		return cfgJSON, nil
	}
	var err error
	if hc["StartInterval"], err = json.Marshal(int64(d)); err != nil {
		return nil, err
	}
	if cfg["Healthcheck"], err = json.Marshal(hc); err != nil {
		return nil, err
	}
	if top["config"], err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}
