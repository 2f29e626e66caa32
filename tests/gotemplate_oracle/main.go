// Command gotemplate_oracle runs Go's own text/template on test cases so that
// tests/test_gotemplate.py can check dockyard.gotemplate against the real thing.
//
// stdin: a JSON array of {"t": template, "d": data, "missingkey": "..."}; numbers in
// data without '.', 'e' or 'E' become int, the others float64. stdout: a JSON array of
// {"out": output, "err": error text or ""}. The docker/cli functions are re-stated here
// from their documented behaviour (json without HTML escaping, split, join, title, lower,
// upper, pad, truncate).
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type tcase struct {
	T          string          `json:"t"`
	D          json.RawMessage `json:"d"`
	MissingKey string          `json:"missingkey"`
}

type result struct {
	Out string `json:"out"`
	Err string `json:"err"`
}

func convert(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if strings.ContainsAny(s, ".eE") {
			f, _ := x.Float64()
			return f
		}
		i, _ := x.Int64()
		return int(i)
	case map[string]interface{}:
		for k, e := range x {
			x[k] = convert(e)
		}
	case []interface{}:
		for i, e := range x {
			x[i] = convert(e)
		}
	}
	return v
}

var funcs = template.FuncMap{
	"json": func(v interface{}) string {
		buf := &bytes.Buffer{}
		enc := json.NewEncoder(buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return strings.TrimSpace(buf.String())
	},
	"split": strings.Split,
	"join":  strings.Join,
	"title": strings.Title,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"pad": func(s string, pre, post int) string {
		if s == "" {
			return s
		}
		return strings.Repeat(" ", pre) + s + strings.Repeat(" ", post)
	},
	"truncate": func(s string, n int) string {
		if len(s) < n {
			return s
		}
		return s[:n]
	},
}

func main() {
	var cases []tcase
	dec := json.NewDecoder(os.Stdin)
	if err := dec.Decode(&cases); err != nil {
		panic(err)
	}
	out := make([]result, 0, len(cases))
	for _, c := range cases {
		var data interface{}
		d := json.NewDecoder(bytes.NewReader(c.D))
		d.UseNumber()
		if err := d.Decode(&data); err != nil {
			panic(err)
		}
		data = convert(data)
		tmpl, err := template.New("").Funcs(funcs).Parse(c.T)
		if err != nil {
			out = append(out, result{Err: err.Error()})
			continue
		}
		if c.MissingKey != "" {
			tmpl = tmpl.Option("missingkey=" + c.MissingKey)
		}
		buf := &bytes.Buffer{}
		err = tmpl.Execute(buf, data)
		r := result{Out: buf.String()}
		if err != nil {
			r.Err = err.Error()
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(out)
}
