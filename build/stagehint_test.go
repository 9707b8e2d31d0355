package build

import (
	"errors"
	"testing"

	"builder/parser"
)

// TestStageHint checks the hints added to an image that could not be
// resolved in FROM or --from: the stage it nearly names, or, for a bare
// name, the stages defined before.
func TestStageHint(t *testing.T) {
	j := &job{g: &parser.Graph{Stages: []*parser.Stage{
		{Index: 0, Name: "builder"}, {Index: 1}, {Index: 2, Name: "tester"}, {Index: 3},
	}}}
	pullErr := errors.New("pull docker.io/library/x:latest: not found")
	for _, c := range []struct {
		name  string
		index int
		want  string
	}{
		{"biulder", 3, pullErr.Error() + " (did you mean builder?)"},
		{"registry.example.com:5000/team/tesster:1", 3, pullErr.Error() + " (did you mean tester?)"},
		{"release", 3, pullErr.Error() + " (not a stage either; stages before this one: builder, tester)"},
		{"release", 1, pullErr.Error() + " (not a stage either; stages before this one: builder)"},
		{"release", 0, pullErr.Error()},                                                           // no stage before the first
		{"registry.example.com/release", 3, pullErr.Error()},                                      // clearly an image reference
		{"tester", 2, pullErr.Error() + " (not a stage either; stages before this one: builder)"}, // a later stage is no candidate
	} {
		err := j.stageHint(pullErr, c.name, c.index)
		if err.Error() != c.want {
			t.Errorf("stageHint(%q, %d) = %q, want %q", c.name, c.index, err, c.want)
		}
		if !errors.Is(err, pullErr) {
			t.Errorf("stageHint(%q) lost the cause", c.name)
		}
	}
}
