"""An independent client of Strata's history API: Python grpcio with stubs
generated from proto/strata/v1/history.proto by grpc_tools (PYTHONPATH).

    history_client.py list ENDPOINT TOKEN USER PAGE_SIZE ORDER
        every page, one JSON object per event, then {"pages": N}
    history_client.py get ENDPOINT TOKEN EVENT_ID
    history_client.py health ENDPOINT
    history_client.py health_tls ENDPOINT CA_PEM TOKEN
    history_client.py reflect ENDPOINT (v1|v1alpha)
"""
import json
import sys

import grpc

from strata.v1 import history_pb2, history_pb2_grpc


def metadata(token):
    return [("authorization", f"Bearer {token}")]


def event_json(event):
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "kind": event.kind,
        "occurred_at_micros": event.event_time.seconds * 1_000_000 + event.event_time.nanos // 1000,
        "source": event.source,
        "payload": json.loads(event.payload_json),
    }


def list_all(endpoint, token, user, page_size, order):
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        token_value = ""
        pages = 0
        while True:
            request = history_pb2.ListActivityRequest(
                user_id=user,
                page_size=int(page_size),
                order=history_pb2.ORDER_DESCENDING if order == "desc" else history_pb2.ORDER_ASCENDING,
                page_token=token_value,
            )
            response = stub.ListActivity(request, metadata=metadata(token), timeout=30)
            pages += 1
            for event in response.events:
                print(json.dumps(event_json(event)))
            if not response.next_page_token:
                break
            token_value = response.next_page_token
        print(json.dumps({"pages": pages}))


def get(endpoint, token, event_id):
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        try:
            event = stub.GetEvent(history_pb2.GetEventRequest(event_id=event_id), metadata=metadata(token), timeout=30).event
            print(json.dumps(event_json(event)))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name}))


def health(endpoint):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", "strata.v1.HistoryService"]:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            print(json.dumps({"service": service, "status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}))


def health_tls(endpoint, ca_file, token):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(endpoint, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="strata.v1.HistoryService"), timeout=10)
        page = history_pb2_grpc.HistoryServiceStub(channel).ListActivity(history_pb2.ListActivityRequest(page_size=3), metadata=metadata(token), timeout=10)
        print(json.dumps({"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), "events": len(page.events)}))


def reflect(endpoint, version):
    # v1 and v1alpha messages are the same on the wire; call the method by
    # its full name so both services are exercised.
    from grpc_reflection.v1alpha import reflection_pb2

    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="strata.v1.HistoryService"),
        ]
        replies = list(call(iter(requests), timeout=10))
        services = sorted(s.name for s in replies[0].list_services_response.service)
        files = len(replies[1].file_descriptor_response.file_descriptor_proto)
        print(json.dumps({"services": services, "files": files}))


def main():
    command = sys.argv[1]
    if command == "list":
        list_all(*sys.argv[2:7])
    elif command == "get":
        get(*sys.argv[2:5])
    elif command == "health":
        health(sys.argv[2])
    elif command == "health_tls":
        health_tls(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "reflect":
        reflect(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
