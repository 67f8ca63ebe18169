"""LocalStack ready hook: create the work queue and its dead-letter queue.

Mounted into /etc/localstack/init/ready.d/ by compose.yaml; LocalStack runs it
in its own Python interpreter (which has boto3) once SQS answers. It is also a
plain script (``python deploy/localstack/init_sqs.py``) against any SQS
endpoint given by AWS_ENDPOINT_URL. Idempotent: queues that exist are kept and
their attributes set again.

The client is made by localstack-client (endpoint, test credentials, region,
with AWS_ENDPOINT_URL taking precedence as everywhere in LocalStack's tools).
LocalStack's own interpreter does not ship localstack-client (localstack-core
4.14 does not depend on it), so there the same client is made with boto3.

Environment (all optional):
  QUEUE_NAME (cache-pipeline), DLQ_NAME (cache-pipeline-dlq),
  MAX_RECEIVE_COUNT (5: receives before SQS moves a message to the DLQ),
  VISIBILITY_TIMEOUT (30), AWS_ENDPOINT_URL (http://localhost:4566),
  AWS_REGION (us-east-1).
"""

import json
import os

import boto3

DLQ_RETENTION_SECS = 14 * 24 * 3600  # the SQS maximum: time to look at what failed


def sqs_client():
    """An SQS client on LocalStack (AWS_ENDPOINT_URL, else localhost:4566)."""
    credentials = {
        "region_name": os.environ.get("AWS_REGION", "us-east-1"),
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    }
    try:
        from localstack_client.session import Session
    except ImportError:  # inside the LocalStack container
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://localhost:4566")
        return boto3.client("sqs", endpoint_url=endpoint, **credentials)
    return Session(**credentials, localstack_host="localhost:4566").client("sqs")


def create_queues() -> tuple[str, str]:
    """Create (or update) the DLQ, then the queue with a redrive policy to it."""
    client = sqs_client()
    dlq_url = client.create_queue(QueueName=os.environ.get("DLQ_NAME", "cache-pipeline-dlq"))[
        "QueueUrl"
    ]
    client.set_queue_attributes(
        QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECS)}
    )
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": os.environ.get("MAX_RECEIVE_COUNT", "5"),
    }
    attributes = {
        "VisibilityTimeout": os.environ.get("VISIBILITY_TIMEOUT", "30"),
        "RedrivePolicy": json.dumps(redrive),
    }
    queue_url = client.create_queue(QueueName=os.environ.get("QUEUE_NAME", "cache-pipeline"))[
        "QueueUrl"
    ]
    client.set_queue_attributes(QueueUrl=queue_url, Attributes=attributes)
    print(f"init_sqs: queue {queue_url} -> dead-letter queue {dlq_url}")
    return queue_url, dlq_url


# LocalStack executes ready hooks with exec(), not as __main__: run unconditionally.
create_queues()
