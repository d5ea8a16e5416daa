"""A Strata subscriber in Python: catch up, follow live, resume after a
restart from the last resume token, which it keeps in a file next to what
it did (here: nothing but print the events as JSON lines).

    python -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. \
        strata/v1/history.proto strata/v1/subscription.proto
    python examples/python/subscribe.py ENDPOINT TOKEN STATE_FILE \
        [--kinds deposit,withdrawal] [--contains '{"currency": "EUR"}'] \
        [--stop-after N] [--until-live]

--stop-after N: exit after the response that brings the count to N or
more (its token saved), as a crash after a checkpoint would.
--until-live: exit once the subscription is live (caught up).
The test suite runs it twice on one state file and checks that the two
runs together printed every matching event exactly once, in order.
"""
import argparse
import json
import os
import sys

import grpc

from strata.v1 import subscription_pb2 as pb
from strata.v1 import subscription_pb2_grpc as rpc


def load_token(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def save_token(path, token):
    # Write then rename: a crash leaves the old token or the new one.
    with open(path + ".tmp", "w") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("token")
    parser.add_argument("state_file")
    parser.add_argument("--kinds", default="")
    parser.add_argument("--contains", default="")
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--until-live", action="store_true")
    args = parser.parse_args()

    flt = pb.SubscriptionFilter(
        kinds=[k for k in args.kinds.split(",") if k],
        payload_contains_json=args.contains,
    )
    saved = load_token(args.state_file)
    start = {"resume_token": saved} if saved else {"from_beginning": True}
    request = pb.SubscribeRequest(filter=flt, **start)
    auth = [("authorization", f"Bearer {args.token}")]
    printed = 0
    with grpc.insecure_channel(args.endpoint) as channel:
        stub = rpc.SubscriptionServiceStub(channel)
        try:
            for response in stub.Subscribe(request, metadata=auth):
                for item in response.events:
                    e = item.event
                    print(json.dumps({
                        "commit_sequence": item.commit_sequence,
                        "event_id": e.event_id,
                        "user_id": e.user_id,
                        "kind": e.kind,
                        "payload": json.loads(e.payload_json),
                    }))
                    printed += 1
                sys.stdout.flush()
                save_token(args.state_file, response.resume_token)
                if args.stop_after and printed >= args.stop_after:
                    return 0
                if args.until_live and response.state == pb.SUBSCRIPTION_STATE_LIVE:
                    return 0
        except grpc.RpcError as err:
            print(json.dumps({"error": err.code().name, "message": err.details()}))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
