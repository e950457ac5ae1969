"""A spore.v1 client in Python, generated from proto/ at test time (grpcio-tools).

usage: client.py PROTO_DIR OUT_DIR SOCKET
Prints one JSON object: the zones listed and the events read from sequence 1.
"""
import json
import os
import sys

from grpc_tools import protoc
import grpc_tools

proto_dir, out_dir, socket = sys.argv[1:4]
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
status = protoc.main([
    "protoc", f"-I{proto_dir}", f"-I{well_known}",
    f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
    os.path.join(proto_dir, "spore/v1/control.proto"),
])
if status != 0:
    sys.exit(f"protoc failed with {status}")
sys.path.insert(0, out_dir)

import grpc  # noqa: E402
from spore.v1 import control_pb2, control_pb2_grpc  # noqa: E402

# gRPC C-core (since 1.57) sends the %-encoded socket path as :authority, which the HTTP/2
# layer under spored (h2) rejects as malformed (grpc/grpc#38142, hyperium/h2#487): name the
# authority explicitly, as docs/api.md tells every C-core based client to do.
channel = grpc.insecure_channel(
    f"unix:{socket}", options=[("grpc.default_authority", "localhost")]
)
stub = control_pb2_grpc.ControlStub(channel)
zones = stub.ListZones(control_pb2.ListZonesRequest(), timeout=10)
status = stub.GetHostStatus(control_pb2.GetHostStatusRequest(), timeout=10)
events = []
stream = stub.WatchEvents(control_pb2.WatchEventsRequest(from_sequence=1), timeout=10)
for event in stream if status.last_event_sequence > 0 else []:
    events.append({
        "sequence": event.sequence,
        "kind": event.WhichOneof("kind"),
        "references": list(event.image_changed.references),
    })
    if event.sequence >= status.last_event_sequence:
        break
stream.cancel()
print(json.dumps({"zones": len(zones.zones), "last": status.last_event_sequence, "events": events}))
