//! A checker for CloudWatch Embedded Metric Format documents, after the specification
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>):
//! what CloudWatch Logs needs to extract metrics from a log line instead of ignoring it.

use serde_json::Value;

/// The units the specification allows for a metric.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// `Ok` when `document` (a whole log line, parsed) is a valid EMF document; otherwise what is
/// wrong.
pub fn check(document: &Value) -> Result<(), String> {
    let root = document.as_object().ok_or("the root is not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object at the root")?;
    aws.get("Timestamp")
        .and_then(Value::as_u64)
        .ok_or("_aws.Timestamp is not a whole number of milliseconds")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics is not an array")?;
    if directives.is_empty() {
        return Err("_aws.CloudWatchMetrics is empty".into());
    }
    for directive in directives {
        let namespace = directive["Namespace"]
            .as_str()
            .ok_or("a directive has no Namespace string")?;
        if namespace.is_empty() || namespace.len() > 255 {
            return Err(format!("Namespace {namespace:?} is not 1-255 characters"));
        }
        let sets = directive["Dimensions"]
            .as_array()
            .ok_or("Dimensions is not an array")?;
        for set in sets {
            let keys = set.as_array().ok_or("a dimension set is not an array")?;
            if keys.len() > 30 {
                return Err("a dimension set has more than 30 keys".into());
            }
            for key in keys {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                if !root.get(key).is_some_and(Value::is_string) {
                    return Err(format!("dimension {key} has no string value at the root"));
                }
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .ok_or("Metrics is not an array")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err("Metrics must hold 1 to 100 definitions".into());
        }
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric has no Name")?;
            if let Some(unit) = metric.get("Unit")
                && !unit.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                return Err(format!(
                    "metric {name}: unit {unit} is not one of the spec's"
                ));
            }
            let value = root
                .get(name)
                .ok_or(format!("metric {name} has no value at the root"))?;
            let numeric = value.is_number()
                || value
                    .as_array()
                    .is_some_and(|values| values.iter().all(Value::is_number));
            if !numeric {
                return Err(format!("metric {name}: {value} is not a number"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "FunctionName": "f", "relayed": 1,
            "_aws": {"Timestamp": 1, "CloudWatchMetrics": [{
                "Namespace": "N", "Dimensions": [["FunctionName"]],
                "Metrics": [{"Name": "relayed", "Unit": "Count"}]}]}
        })
    }

    #[test]
    fn the_checker_refuses_what_cloudwatch_would_ignore() {
        assert_eq!(check(&valid()), Ok(()));
        let mut no_value = valid();
        no_value.as_object_mut().unwrap().remove("relayed");
        assert!(check(&no_value).is_err());
        let mut text_value = valid();
        text_value["relayed"] = json!("1");
        assert!(check(&text_value).is_err());
        let mut no_dimension = valid();
        no_dimension.as_object_mut().unwrap().remove("FunctionName");
        assert!(check(&no_dimension).is_err());
        let mut bad_unit = valid();
        bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("ms");
        assert!(check(&bad_unit).is_err());
        let mut string_aws = valid();
        string_aws["_aws"] = json!("{}");
        assert!(check(&string_aws).is_err());
    }
}
