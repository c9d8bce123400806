# Two instances of two services on one host, as Consul's HCL service files write them.
services {
  name = "billing"
  id   = "billing-1"
  port = 9090
  tags = ["eu", "v1"]

  check {
    args     = ["/usr/local/bin/check-billing", "--quick"]
    interval = "1m30s"
    timeout  = "5s"
    deregister_critical_service_after = "90m"
  }

  connect {
    sidecar_service {
      proxy {
        config {
          protocol = "grpc"
        }
      }
    }
  }
}

services {
  name    = "ledger"
  port    = 7070
  address = "127.0.0.1"

  checks = [
    {
      tcp      = "127.0.0.1:7070"
      interval = "5s"
      timeout  = "500ms"
    }
  ]

  meta = {
    protocol = "tcp"
  }
}
