"""The task messages the web process makes itself (`taskqueue.messages`), read back."""

from __future__ import annotations

import base64
import json
import uuid

from bulksms import taskqueue


def test_each_message_carries_its_own_ids_args_and_queue_escaped_as_json() -> None:
    calls = [('job"\\é\n', 0), ("plain", 7)]
    made = taskqueue.messages(taskqueue.SEND_BATCH, calls, urgent=True)
    assert [queue for queue, _ in made] == [taskqueue.URGENT_QUEUE] * 2
    ids = set()
    for (_, text), args in zip(made, calls, strict=True):
        message = json.loads(text)
        headers, properties = message["headers"], message["properties"]
        assert headers["task"] == taskqueue.SEND_BATCH
        assert headers["argsrepr"] == repr(args)
        assert json.loads(base64.b64decode(message["body"])) == [list(args), {}, {}]
        assert headers["id"] == headers["root_id"] == properties["correlation_id"]
        assert properties["delivery_tag"] != headers["id"]
        for made_id in (headers["id"], properties["delivery_tag"]):
            assert uuid.UUID(made_id).version == 4
        assert properties["delivery_info"] == {"exchange": "", "routing_key": "bulksms.urgent"}
        assert float(headers[taskqueue.PUSHED]) > 0
        ids |= {headers["id"], properties["delivery_tag"]}
    assert len(ids) == 4  # every id new


def test_a_campaign_s_fan_out_goes_to_the_batch_queue() -> None:
    ((queue, text),) = taskqueue.messages(taskqueue.FAN_OUT, [("j",)], False)
    assert queue == taskqueue.QUEUE
    assert json.loads(text)["headers"]["task"] == taskqueue.FAN_OUT
