package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"
)

// parseTemplate parses a --format Go template with the functions docker's
// templates have: json, join, upper, lower and truncate. A bad template
// is a usage error.
func parseTemplate(format string) (*template.Template, error) {
	t, err := template.New("format").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join":  strings.Join,
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
		"truncate": func(s string, n int) string {
			if r := []rune(s); len(r) > n {
				return string(r[:n])
			}
			return s
		},
	}).Parse(format)
	if err != nil {
		return nil, usagef("--format: %w", err)
	}
	return t, nil
}

// executeLine runs tmpl on v and writes the result ending in one newline.
func executeLine(w io.Writer, tmpl *template.Template, v any) error {
	var b strings.Builder
	if err := tmpl.Execute(&b, v); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	_, err := io.WriteString(w, out)
	return err
}
