# Sourced by bench/run.sh and bench/ab-cpu.sh: the nginx configurations
# both start, written once so that ab-cpu.sh's `nginx` peer is run.sh's
# nginx-proxy row and their upstream is the same.

# Writes DIR/nginx.conf: one worker in the foreground, its temp files under
# DIR/tmp, and BODY inside the http block.
nginx_conf() { # dir port body-of-http-block
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<NGINX
worker_processes 1;
master_process off;
daemon off;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
$3
}
NGINX
}

# The static upstream on PORT: every request answered with a 51-byte JSON body.
static_upstream() { # port
  printf '%s\n' "
  access_log off;
  server {
    listen 127.0.0.1:$1;
    location / {
      default_type application/json;
      return 200 '{\"id\":\"CP-1\",\"status\":\"Available\",\"connectors\":2}\n';
    }
  }"
}

# The proxying both nginx peers of run.sh do (plain and TLS): a keep-alive
# pool to the upstream and the X-Forwarded-* headers tollgate sets.
PROXY_LOCATION="    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }"

# nginx-proxy: a plain reverse proxy on PORT to the upstream on UPSTREAM_PORT
# doing what tollgate does to headers, with an access line per request to LOG.
nginx_proxy() { # port upstream-port log
  printf '%s\n' "
  access_log $3;
  upstream api { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
$PROXY_LOCATION
  }"
}
