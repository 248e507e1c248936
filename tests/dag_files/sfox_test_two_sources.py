"""Two onboarding DAGs from the factory: two sources in two warehouses (driven by tests/onboarding)."""

from __future__ import annotations

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

retail = onboarding_dag(
    dag_id="sfox_test_retail",
    source=OnboardingSource(table="retail_customers", columns={"user_id": "customer_id"}),
    warehouse_conn_id="sfox_warehouse_retail",
    schedule=None,
)
business = onboarding_dag(
    dag_id="sfox_test_business",
    source=OnboardingSource(query="SELECT * FROM companies WHERE active = 1"),
    warehouse_conn_id="sfox_warehouse_business",
    parallel_chunks=2,
    schedule=None,
)
