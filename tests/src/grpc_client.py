# One gRPC call for end-to-end tests: grpc_client.py TARGET PAYLOAD TIMEOUT_S [KEY=VALUE ...]
# Prints one line: "<status> <reply or details> error=<x-hostmesh-error trailer>".
import sys

import grpc

target, payload, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
metadata = [tuple(kv.split("=", 1)) for kv in sys.argv[4:]]
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary("/demo.Echo/Call")
    try:
        reply, rpc = call.with_call(payload.encode(), timeout=timeout, metadata=metadata)
        print("OK", reply.decode(), "error=")
    except grpc.RpcError as e:
        trailers = dict(e.trailing_metadata() or ())
        print(e.code().name, e.details(), "error=" + trailers.get("x-hostmesh-error", ""))
