from billing import keys


def test_a_key_has_a_prefix_192_random_bits_and_a_checksum():
    new = keys.generate()
    assert new.plaintext.startswith("sk-llm-")
    assert len(new.plaintext) == keys.KEY_LENGTH
    assert keys.is_well_formed(new.plaintext)
    assert new.prefix == new.plaintext[:11]
    assert new.last4 == new.plaintext[-4:]
    assert new.digest == keys.digest(new.plaintext)
    assert new.plaintext not in new.digest
    assert len({keys.generate().plaintext for _ in range(100)}) == 100


def test_any_single_changed_character_breaks_the_checksum():
    key = keys.generate().plaintext
    for position in range(len(keys.PREFIX), len(key)):
        replacement = "a" if key[position] != "a" else "b"
        mangled = key[:position] + replacement + key[position + 1 :]
        assert not keys.is_well_formed(mangled), position


def test_it_refuses_keys_of_the_wrong_shape():
    key = keys.generate().plaintext
    assert not keys.is_well_formed(key[:-1])
    assert not keys.is_well_formed(key + "x")
    assert not keys.is_well_formed("sk-xxx-" + key[7:])
    assert not keys.is_well_formed(key[:-1] + "-")
