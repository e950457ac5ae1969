"""A spore.v1 client in Python, generated from proto/ at test time (grpcio-tools).

usage: client.py PROTO_DIR OUT_DIR SOCKET
Prints one JSON object: the zones listed, the events read from sequence 1, and how many of the
other ways to name the socket answered.
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

# The channel a user writes first, with grpcio's defaults: C-core (since 1.57) then sends the
# socket path, %-encoded, as :authority, which spored must accept (daemon/src/authority).
channel = grpc.insecure_channel(f"unix://{socket}")
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

# Many calls on one connection, with metadata that fills and cycles grpcio's HPACK table, so
# later calls name the authority by a table index and by entries that moved.
for i in range(60):
    stub.GetHostStatus(control_pb2.GetHostStatusRequest(), timeout=10,
                       metadata=[(f"x-spore-test-{i % 7}", "v" * (i * 37 % 900))])

# The other spellings of the target, and the documented workaround of older spored releases.
others = 0
for target, options in [(f"unix:{socket}", []),
                        (f"unix://{socket}", [("grpc.default_authority", "localhost")])]:
    with grpc.insecure_channel(target, options=options) as other:
        control_pb2_grpc.ControlStub(other).GetHostStatus(
            control_pb2.GetHostStatusRequest(), timeout=10)
        others += 1

print(json.dumps({"zones": len(zones.zones), "last": status.last_event_sequence,
                  "events": events, "others": others}))
