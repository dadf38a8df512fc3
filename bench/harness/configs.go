package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// gptapiConfig is gptapi's config for the benchmark: one client on the mock,
// records on (bodies too) in dir, log level warn; every other key at its
// default, as a user would run it.
func gptapiConfig(listenPort, mockPort int, dir string) string {
	return fmt.Sprintf(`# gptapi config written by bench/harness for one benchmark run.
server:
  listen: "127.0.0.1:%d"
log:
  level: warn
logsink:
  path: %s
  spill_dir: %s
openai_clients:
  - name: mock
    base_url: http://127.0.0.1:%d/v1
    model_match:
      type: keyword
      value: [bench]
`, listenPort, filepath.Join(dir, "gptapi.db"), filepath.Join(dir, "spill"), mockPort)
}

// nginxConfig is the baseline: a plain proxy_pass to the mock with one
// worker, a keep-alive upstream pool of 256, HTTP/1.1 upstream, no response
// buffering (so SSE flows through) and no access log. keepalive_requests is
// raised on both sides because gptapi does not recycle connections either.
// Every path nginx writes is under dir.
func nginxConfig(listenPort, mockPort int, dir string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# nginx baseline written by bench/harness for one benchmark run.")
	p("worker_processes 1;")
	p("daemon off;")
	p("master_process on;")
	p("pid %s;", filepath.Join(dir, "nginx.pid"))
	p("error_log %s warn;", filepath.Join(dir, "error.log"))
	p("events {")
	p("    worker_connections 8192;")
	p("}")
	p("http {")
	p("    access_log off;")
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		p("    %s_temp_path %s;", t, filepath.Join(dir, t+"_temp"))
	}
	p("    keepalive_requests 1000000;")
	p("    keepalive_timeout 120s;")
	p("    upstream mock {")
	p("        server 127.0.0.1:%d;", mockPort)
	p("        keepalive 256;")
	p("        keepalive_requests 1000000;")
	p("    }")
	p("    server {")
	p("        listen 127.0.0.1:%d backlog=4096;", listenPort)
	p("        location / {")
	p("            proxy_pass http://mock;")
	p("            proxy_http_version 1.1;")
	p(`            proxy_set_header Connection "";`)
	p("            proxy_buffering off;")
	p("        }")
	p("    }")
	p("}")
	return b.String()
}
