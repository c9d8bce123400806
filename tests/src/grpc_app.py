# A gRPC app (h2c) for end-to-end tests, without generated code: one unary method,
# /demo.Echo/Call, taking and returning raw bytes. A request "sleep:<ms>" sleeps first. The reply
# says what the app saw: "timeout=<x-hostmesh-timeout>;caller=<x-hostmesh-caller>".
# Usage: grpc_app.py DIR BIND PORT   (creates DIR/ready once listening)
import os
import sys
import time
from concurrent import futures

import grpc

d, bind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


def call(request, context):
    text = request.decode()
    if text.startswith("sleep:"):
        time.sleep(int(text[6:]) / 1000.0)
    md = dict(context.invocation_metadata())
    return "timeout={};caller={}".format(md.get("x-hostmesh-timeout", ""), md.get("x-hostmesh-caller", "")).encode()


handler = grpc.method_handlers_generic_handler(
    "demo.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)}
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("{}:{}".format(bind, port))
server.start()
open(os.path.join(d, "ready"), "w").close()
server.wait_for_termination()
