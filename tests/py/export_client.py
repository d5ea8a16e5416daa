"""An independent client of Strata's export jobs and of its rich errors:
Python grpcio with stubs generated from proto/strata/v1/history.proto by
grpc_tools (PYTHONPATH), and grpcio-status to read the error details
(AIP-193: google.rpc.Status in the grpc-status-details-bin trailer, details
unpacked from google.protobuf.Any into google.rpc.error_details_pb2).

    export_client.py error ENDPOINT TOKEN METHOD JSON_REQUEST
        calls METHOD (ListActivity, GetEvent, ExportActivity, StartExport,
        GetExport, ListExports, CancelExport) with the request parsed from
        JSON_REQUEST (protobuf JSON mapping); prints {"code": "OK"} or
        {"code", "message", "reason", "domain", "metadata",
         "field_violations", "retry_delay_ms", "request_id", "resource"}
    export_client.py idempotent ENDPOINT TOKEN USER REQUEST_ID
        StartExport (CSV) twice with REQUEST_ID: {"first", "second",
        "first_state", "request_id", "format"}; then once more as JSON lines
        with the same REQUEST_ID: the error object (or {"code": "OK"})
    export_client.py list ENDPOINT TOKEN USER_FILTER PAGE_SIZE
        ListExports, every page: one JSON object per job, then {"pages": N}
    export_client.py cancel ENDPOINT TOKEN EXPORT_ID
        CancelExport: {"state", "finish_time_set"} or the error object

Results are one JSON object per line on stdout; the exit code is 0 whenever
the calls were made (an RPC error that a command reports is a result).
"""
import json
import sys

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.v1 import history_pb2, history_pb2_grpc

# Method name -> (request type, server streaming).
METHODS = {
    "ListActivity": (history_pb2.ListActivityRequest, False),
    "GetEvent": (history_pb2.GetEventRequest, False),
    "ExportActivity": (history_pb2.ExportActivityRequest, True),
    "StartExport": (history_pb2.StartExportRequest, False),
    "GetExport": (history_pb2.GetExportRequest, False),
    "ListExports": (history_pb2.ListExportsRequest, False),
    "CancelExport": (history_pb2.CancelExportRequest, False),
}


def metadata(token):
    return [("authorization", f"Bearer {token}")]


def micros(timestamp):
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def decode_status(code_name, message, status):
    """The error object of a failed call: `status` is the google.rpc.Status
    of its details trailer, or None when it had none."""
    result = {
        "code": code_name,
        "message": message,
        "reason": None,
        "domain": None,
        "metadata": {},
        "field_violations": [],
        "retry_delay_ms": None,
        "request_id": None,
        "resource": None,
    }
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result["reason"] = info.reason
            result["domain"] = info.domain
            result["metadata"] = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result["field_violations"].extend([v.field, v.description] for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result["retry_delay_ms"] = retry.retry_delay.ToMilliseconds()
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            request_info = error_details_pb2.RequestInfo()
            detail.Unpack(request_info)
            result["request_id"] = request_info.request_id
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
            result["resource"] = [resource.resource_type, resource.resource_name]
    return result


def error_json(err):
    """The error object of a grpc.RpcError. rpc_status.from_call raises
    ValueError when the details' code or message differ from the call's
    grpc-status / grpc-message: a server bug, left to fail the command."""
    return decode_status(err.code().name, err.details(), rpc_status.from_call(err))


def call(endpoint, token, method, json_request):
    request_type, streaming = METHODS[method]
    request = json_format.ParseDict(json.loads(json_request), request_type())
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        try:
            reply = getattr(stub, method)(request, metadata=metadata(token), timeout=30)
            if streaming:
                for _ in reply:
                    pass
            print(json.dumps({"code": "OK"}))
        except grpc.RpcError as err:
            print(json.dumps(error_json(err)))


def idempotent(endpoint, token, user, request_id):
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)

        def start(export_format):
            request = history_pb2.StartExportRequest(user_id=user, request_id=request_id, format=export_format)
            return stub.StartExport(request, metadata=metadata(token), timeout=30).export_job

        first = start(history_pb2.EXPORT_FORMAT_CSV)
        second = start(history_pb2.EXPORT_FORMAT_CSV)
        print(json.dumps({
            "first": first.export_id,
            "second": second.export_id,
            "first_state": history_pb2.ExportState.Name(first.state),
            "request_id": first.request_id,
            "format": history_pb2.ExportFormat.Name(first.format),
        }))
        try:
            start(history_pb2.EXPORT_FORMAT_JSONL)
            print(json.dumps({"code": "OK"}))
        except grpc.RpcError as err:
            print(json.dumps(error_json(err)))


def job_json(job):
    return {
        "export_id": job.export_id,
        "state": history_pb2.ExportState.Name(job.state),
        "user_id": job.user_id,
        "create_time_micros": micros(job.create_time),
        "request_id": job.request_id,
        "kinds": list(job.kinds),
        "format": history_pb2.ExportFormat.Name(job.format),
        "has_download_uri": bool(job.download_uri),
    }


def list_all(endpoint, token, user, page_size):
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        token_value = ""
        pages = 0
        while True:
            request = history_pb2.ListExportsRequest(user_id=user, page_size=int(page_size), page_token=token_value)
            response = stub.ListExports(request, metadata=metadata(token), timeout=30)
            pages += 1
            for job in response.export_jobs:
                print(json.dumps(job_json(job)))
            if not response.next_page_token:
                break
            token_value = response.next_page_token
        print(json.dumps({"pages": pages}))


def cancel(endpoint, token, export_id):
    with grpc.insecure_channel(endpoint) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        try:
            job = stub.CancelExport(history_pb2.CancelExportRequest(export_id=export_id), metadata=metadata(token), timeout=30).export_job
            print(json.dumps({
                "state": history_pb2.ExportState.Name(job.state),
                "finish_time_set": job.HasField("finish_time"),
            }))
        except grpc.RpcError as err:
            print(json.dumps(error_json(err)))


def main():
    command = sys.argv[1]
    if command == "error":
        call(*sys.argv[2:6])
    elif command == "idempotent":
        idempotent(*sys.argv[2:6])
    elif command == "list":
        list_all(*sys.argv[2:6])
    elif command == "cancel":
        cancel(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
