import tocsin.client


def test_public_names_are_pinned_and_sorted() -> None:
    assert tocsin.client.__all__ == sorted(tocsin.client.__all__)
    for name in tocsin.client.__all__:
        assert hasattr(tocsin.client, name), name
