package main

import (
	"fmt"
	"path/filepath"
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
// Every path is relative to the prefix nginx is started with (-p).
func nginxConfig(listenPort, mockPort int) string {
	return fmt.Sprintf(`# nginx baseline written by the benchmark harness for one run.
worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream mock {
        server 127.0.0.1:%d;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:%d backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
`, mockPort, listenPort)
}
