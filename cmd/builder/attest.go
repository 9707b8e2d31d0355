package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"builder/build"
	"builder/build/attest"
	"builder/export"
	"builder/export/output"
)

// attestFlags are the --provenance, --sbom, --attest and --attest-store
// values, as buildx reads them.
type attestFlags struct {
	provenance, sbom string
	attest           []string
	store            string
}

// attestPlan is what the build attaches.
type attestPlan struct {
	provenance *attest.ProvenanceOptions // nil: none
	sbom       bool
	generator  string
	store      string
}

// parseAttest turns the flags into a plan. Without any of them,
// provenance mode=min is attached when the build pushes, as buildx does,
// unless BUILDX_NO_DEFAULT_ATTESTATIONS is set.
func parseAttest(f attestFlags, pushes bool) (*attestPlan, error) {
	p := &attestPlan{store: f.store}
	switch f.store {
	case "":
		p.store = output.StoreBoth
	case output.StoreIndex, output.StoreReferrers, output.StoreBoth:
	default:
		return nil, usagef("--attest-store %q: use index, referrers or both", f.store)
	}
	specs := append([]string(nil), f.attest...)
	if f.provenance != "" {
		specs = append(specs, shorthand("provenance", f.provenance))
	}
	if f.sbom != "" {
		specs = append(specs, shorthand("sbom", f.sbom))
	}
	provSet := false
	for _, s := range specs {
		attrs, err := csvAttrs(s)
		if err != nil {
			return nil, usagef("--attest %q: %w", s, err)
		}
		disabled := false
		if v, ok := attrs["disabled"]; ok {
			if disabled, err = strconv.ParseBool(v); err != nil {
				return nil, usagef("--attest %q: disabled=%q is not true or false", s, v)
			}
		}
		switch attrs["type"] {
		case "provenance":
			provSet = true
			p.provenance = nil
			if disabled {
				continue
			}
			o := attest.ProvenanceOptions{Mode: attest.ModeMin, BuilderID: attrs["builder-id"]}
			for k, v := range attrs {
				switch k {
				case "type", "disabled", "builder-id":
				case "mode":
					if o.Mode, err = attest.ParseMode(v); err != nil {
						return nil, usagef("--provenance: %w", err)
					}
				case "version":
					if v != "v1" {
						return nil, usagef("--provenance: version=%s is not supported (only v1)", v)
					}
				case "reproducible":
					if o.Reproducible, err = strconv.ParseBool(v); err != nil {
						return nil, usagef("--provenance: reproducible=%q is not true or false", v)
					}
				default:
					return nil, usagef("--provenance: unknown parameter %s (mode, version, builder-id, reproducible, disabled)", k)
				}
			}
			p.provenance = &o
		case "sbom":
			p.sbom = !disabled
			for k, v := range attrs {
				switch k {
				case "type", "disabled":
				case "generator":
					p.generator = v
				default:
					return nil, usagef("--sbom: unknown parameter %s (generator, disabled)", k)
				}
			}
		default:
			return nil, usagef("--attest %q: type=provenance or type=sbom is needed", s)
		}
	}
	if !provSet && pushes && os.Getenv("BUILDX_NO_DEFAULT_ATTESTATIONS") == "" {
		p.provenance = &attest.ProvenanceOptions{Mode: attest.ModeMin}
	}
	return p, nil
}

// shorthand turns --provenance/--sbom VALUE into an --attest spec:
// true/false, or parameters (mode=max, generator=IMAGE).
func shorthand(typ, v string) string {
	if b, err := strconv.ParseBool(v); err == nil {
		return "type=" + typ + ",disabled=" + strconv.FormatBool(!b)
	}
	return "type=" + typ + "," + v
}

// csvAttrs reads comma-separated KEY=VALUE fields (CSV quoting allowed).
func csvAttrs(s string) (map[string]string, error) {
	fields, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not KEY=VALUE", f)
		}
		attrs[strings.ToLower(strings.TrimSpace(k))] = v
	}
	return attrs, nil
}

// attestations makes the predicates of the plan for a finished build: the
// SBOMs the generator image writes for the image (scanned with b, as o
// says), then the provenance.
func (p *attestPlan) attestations(ctx context.Context, b *build.Builder, o build.Options, res *build.Result) (*output.Attestations, error) {
	a := &output.Attestations{Store: p.store}
	if p.sbom {
		docs, err := b.ScanSBOM(ctx, res, p.generator, o)
		if err != nil {
			return nil, err
		}
		for _, n := range slices.Sorted(maps.Keys(docs)) {
			a.Predicates = append(a.Predicates, output.Predicate{Type: attest.PredicateSPDX, Body: docs[n]})
		}
	}
	if p.provenance != nil && res.Record != nil {
		pr, err := attest.NewProvenance(res.Record, *p.provenance)
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(pr)
		if err != nil {
			return nil, err
		}
		a.Predicates = append(a.Predicates, output.Predicate{Type: attest.PredicateSLSA1, Body: body})
	}
	return a, nil
}

// platformAttestations makes the predicates of the plan for each
// platform of a multi-platform build, as BuildKit does: the provenance of
// that platform's build and the SBOMs of that platform's image, scanned by
// the generator image of the host's platform (BuildKit runs the scanner
// on the build's platform, not the target's).
func (p *attestPlan) platformAttestations(ctx context.Context, b *build.Builder, o build.Options, res *build.Result) (*output.Attestations, error) {
	a := &output.Attestations{Store: p.store, Platforms: map[string][]output.Predicate{}}
	if p.provenance == nil && !p.sbom {
		return a, nil
	}
	so := o
	so.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	so.Platforms = nil
	for i, pi := range res.Images {
		rec := &build.Result{Image: pi.Image}
		if i < len(res.Records) {
			rec.Record = res.Records[i]
		}
		if i < len(res.SBOMExtras) {
			rec.SBOMContext, rec.SBOMStages = res.SBOMExtras[i].Context, res.SBOMExtras[i].Stages
		}
		pa, err := p.attestations(ctx, b, so, rec)
		if err != nil {
			return nil, fmt.Errorf("attestations of %s: %w", export.PlatformString(pi.Platform), err)
		}
		if len(pa.Predicates) > 0 {
			a.Platforms[export.PlatformString(pi.Platform)] = pa.Predicates
		}
	}
	return a, nil
}

// pushes reports whether an output pushes the image.
func pushes(outs []output.Spec) bool {
	for _, o := range outs {
		if o.Push {
			return true
		}
	}
	return false
}

// hasImageOutput reports whether an output writes to the local store.
func hasImageOutput(outs []output.Spec) bool {
	for _, o := range outs {
		if o.Type == "image" {
			return true
		}
	}
	return false
}
