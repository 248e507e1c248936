"""Post an email-verified asset event with the official apache-airflow-client (docs: event-driven)."""

from __future__ import annotations


# [START howto_post_event_client]
def post_email_verified(airflow: str, token: str, user_ids: list[str], host: str = "api.sfox.com") -> int:
    """Post one event naming ``user_ids`` (``pip install apache-airflow-client``); return the asset id."""
    import airflow_client.client as client
    from airflow_client.client.models.create_asset_events_body import CreateAssetEventsBody

    uri = f"sfox://{host}/email-verified"
    configuration = client.Configuration(host=airflow, access_token=token)
    with client.ApiClient(configuration) as api_client:
        assets = client.AssetApi(api_client)
        found = assets.get_assets(uri_pattern=uri).assets
        asset_id = next(a.id for a in found if a.uri == uri)  # uri_pattern is a substring match
        assets.create_asset_event(CreateAssetEventsBody(asset_id=asset_id, extra={"user_ids": user_ids}))
    return int(asset_id)


# [END howto_post_event_client]
