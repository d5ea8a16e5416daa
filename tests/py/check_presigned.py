"""Independent check of a presigned S3 GET URL (SigV4, query auth), since
the local S3 server does not enforce expiry: recompute the signature with
botocore at the URL's own X-Amz-Date and compare.

    check_presigned.py URL ACCESS_KEY SECRET_KEY REGION
prints {"expires": N, "age_s": S, "signature_ok": bool,
        "longer_expiry_signature_differs": bool}
"""
import datetime
import json
import sys
import urllib.parse

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

url, access_key, secret_key, region = sys.argv[1:5]
parts = urllib.parse.urlsplit(url)
query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
params = dict(query)
signed_at = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
expires = int(params["X-Amz-Expires"])
unsigned = [(k, v) for k, v in query if not k.startswith("X-Amz-")]
base = urllib.parse.urlunsplit(
    (parts.scheme, parts.netloc, parts.path, urllib.parse.urlencode(unsigned), "")
)


def signature(expiry):
    botocore.auth.get_current_datetime = lambda: signed_at
    request = AWSRequest(method="GET", url=base)
    auth = botocore.auth.S3SigV4QueryAuth(
        Credentials(access_key, secret_key), "s3", region, expires=expiry
    )
    auth.add_auth(request)
    signed = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
    return signed["X-Amz-Signature"]


now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
print(json.dumps({
    "expires": expires,
    "age_s": (now - signed_at).total_seconds(),
    "signature_ok": signature(expires) == params["X-Amz-Signature"],
    "longer_expiry_signature_differs": signature(3600) != params["X-Amz-Signature"],
}))
