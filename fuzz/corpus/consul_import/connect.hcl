service {
  name = "api"
  port = 9090
  tags = ["v2"]
  connect {
    sidecar_service {
      proxy {
        config {
          protocol = "http2"
        }
      }
    }
  }
  check {
    http = "http://127.0.0.1:9090/health"
    method = "GET"
    interval = "5s"
    timeout = "1s"
  }
}
