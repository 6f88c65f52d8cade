"""The Google Cloud Storage (``gcs``) destination type.

Two ways to authenticate, exactly one per destination:

- an HMAC key (``gcs_access_key`` + ``gcs_secret_key``): Google's XML API, which speaks the
  S3 protocol (SigV4), driven by ``destinations_s3.S3ProtocolStore`` with region ``auto``,
  path-style addressing and checksums only where required;
- a service-account key (``gcs_service_account_json``): google-cloud-storage over the JSON
  API, with resumable uploads from the multipart threshold on.

Each path imports its own SDK the first time a store for it is opened.
"""

from __future__ import annotations

from collections.abc import Callable

from destinations.plugin import DestinationType, Store, StoreOptions, hookimpl

from ._fields import GcsFields, check_gcs_bucket_name

__all__ = [
    "DEFAULT_ENDPOINT",
    "GcsFields",
    "check_gcs_bucket_name",
    "destinations_register_types",
    "open_gcs",
]

DEFAULT_ENDPOINT = "https://storage.googleapis.com"


def open_gcs(fields: GcsFields, options: StoreOptions) -> Store:
    endpoint = fields.gcs_endpoint or DEFAULT_ENDPOINT
    if fields.gcs_service_account_json is not None:
        from ._json_api import GcsJsonStore

        return GcsJsonStore(
            bucket=fields.gcs_bucket_name,
            service_account_json=fields.gcs_service_account_json.get_secret_value(),
            endpoint=endpoint,
            options=options,
            kms_key_name=fields.gcs_kms_key_name,
            storage_class=fields.gcs_storage_class,
        )
    from destinations_s3 import Labels, S3ProtocolStore, UploadOptions

    assert fields.gcs_access_key is not None and fields.gcs_secret_key is not None
    return S3ProtocolStore(
        bucket=fields.gcs_bucket_name,
        access_key_id=fields.gcs_access_key,
        secret_access_key=fields.gcs_secret_key,
        endpoint_url=endpoint,
        region="auto",
        options=options,
        addressing_style="path",
        checksums="when_required",
        upload=UploadOptions(raw_headers=fields.xml_api_headers()),
        labels=Labels(
            provider="Google Cloud Storage",
            access_key_id="gcs_access_key",
            secret="gcs_secret_key",
            bucket="gcs_bucket_name",
            endpoint="gcs_endpoint",
            permissions="storage.objects.create and storage.objects.delete to the HMAC key's "
            "service account (e.g. roles/storage.objectUser)",
        ),
    )


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="gcs",
            fields=GcsFields,
            open_store=open_gcs,
            prefix_field="gcs_path_prefix",
            description="A Google Cloud Storage bucket, with an HMAC key (XML API) or a "
            "service-account key (JSON API).",
            masked_fields=("gcs_access_key",),
            endpoint_fields=("gcs_endpoint",),
            reports_progress=True,  # both paths: s3transfer bodies, the JSON API's requests
        )
    )
